//! JWT bearer authentication (HS256) and roles.
//!
//! A token carries the subject, one [`Role`] and the trading accounts it may touch.
//! Handlers take an [`Auth`] extractor; [`Auth::require`] checks the role and
//! [`Auth::require_account`] checks that a trader only touches their own accounts
//! (operators may touch any). Tokens are issued offline with `voltex token issue`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::problem::ApiError;

/// What a caller may do.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Submits orders and bids for their own accounts; reads market data.
    Trader,
    /// Reads analytics and models; runs optimisations.
    Quant,
    /// Everything, including devices, schedules and other accounts.
    Operator,
    /// A battery agent (fleet endpoints for its own device only).
    Device,
}

/// The claims of a Voltex token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who (user name or device id).
    pub sub: String,
    /// Their role.
    pub role: Role,
    /// Trading accounts they may act for (ignored for operators).
    #[serde(default)]
    pub accounts: Vec<u32>,
    /// Issued at, seconds since the Unix epoch (UTC).
    pub iat: i64,
    /// Expiry, seconds since the Unix epoch (UTC).
    pub exp: i64,
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

/// Why a token was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, expiry or format is wrong.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

impl JwtKeys {
    /// Keys from a shared secret.
    pub fn from_secret(secret: &[u8]) -> JwtKeys {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A signed token for `claims`.
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// The claims of a valid, unexpired token (60 s leeway for clock skew).
    ///
    /// # Errors
    /// [`TokenError::Invalid`].
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 60;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?.claims)
    }
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Auth(pub Claims);

impl Auth {
    /// Refuses callers whose role is not in `roles`.
    ///
    /// # Errors
    /// 403 `forbidden`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {:?} may not do this",
                self.0.role
            )))
        }
    }

    /// Refuses a trader acting for an account that is not theirs.
    ///
    /// # Errors
    /// 403 `forbidden`.
    pub fn require_account(&self, account: u32) -> Result<(), ApiError> {
        match self.0.role {
            Role::Operator => Ok(()),
            Role::Trader | Role::Quant if self.0.accounts.contains(&account) => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "{} may not act for account {account}",
                self.0.sub
            ))),
        }
    }
}

/// Implemented by the server state so the extractor can find the keys.
pub trait HasJwtKeys {
    /// The verification keys.
    fn jwt_keys(&self) -> &JwtKeys;
}

impl<S> FromRequestParts<S> for Auth
where
    S: HasJwtKeys + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Auth, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer token"))?;
        let text = header
            .to_str()
            .map_err(|_| ApiError::unauthenticated("Authorization header is not ASCII"))?;
        let token = text
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthenticated("Authorization must be `Bearer <token>`"))?;
        let claims = state
            .jwt_keys()
            .verify(token.trim())
            .map_err(|error| ApiError::unauthenticated(error.to_string()))?;
        parts.extensions.insert(Actor(claims.sub.clone()));
        Ok(Auth(claims))
    }
}

/// The subject of the request's token, left in the request extensions for the
/// audit and logging layers.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: Role, accounts: Vec<u32>, exp: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            role,
            accounts,
            iat: 0,
            exp,
        }
    }

    const FAR_FUTURE_S: i64 = 4_000_000_000;

    #[test]
    fn token_round_trips() {
        let keys = JwtKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let token = keys
            .issue(&claims(Role::Trader, vec![7], FAR_FUTURE_S))
            .unwrap();
        assert_eq!(keys.verify(&token).unwrap().accounts, vec![7]);
    }

    #[test]
    fn token_signed_with_another_secret_is_refused() {
        let keys = JwtKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let other = JwtKeys::from_secret(b"fedcba9876543210fedcba9876543210");
        let token = other
            .issue(&claims(Role::Operator, vec![], FAR_FUTURE_S))
            .unwrap();
        assert!(keys.verify(&token).is_err());
    }

    #[test]
    fn expired_token_is_refused() {
        let keys = JwtKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let token = keys.issue(&claims(Role::Trader, vec![1], 1_000)).unwrap();
        assert!(keys.verify(&token).is_err());
    }

    #[test]
    fn trader_touches_only_own_accounts() {
        let auth = Auth(claims(Role::Trader, vec![1, 2], FAR_FUTURE_S));
        assert!(auth.require_account(2).is_ok());
        assert_eq!(auth.require_account(3).unwrap_err().code, "forbidden");
        let operator = Auth(claims(Role::Operator, vec![], FAR_FUTURE_S));
        assert!(operator.require_account(3).is_ok());
        let device = Auth(claims(Role::Device, vec![1], FAR_FUTURE_S));
        assert!(device.require_account(1).is_err());
    }
}
