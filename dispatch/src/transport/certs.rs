//! The platform's certificate authority for QUIC mutual TLS (rcgen, ECDSA P-256).
//!
//! [`init_ca`] makes a self-signed CA; [`issue_device`] signs a client certificate whose
//! subject common name is the device id (the platform reads the id from there, never from
//! a message); [`issue_server`] signs the platform's server certificate;
//! [`fingerprint_sha256`] names a certificate. Everything is PEM text: files are the
//! caller's business (`voltex certs` in the root crate, the device API).
//!
//! The private key need not leave the device: [`device_csr`] (run on the device by
//! `voltex-agent csr`) makes a key pair and a certificate signing request, and
//! [`sign_device_csr`] (the platform) signs the request's public key.
//!
//! # Invariants
//! - A device certificate has exactly one common name, a valid [`DeviceId`], and the
//!   `clientAuth` extended key usage; [`device_id_from_cert_der`] accepts nothing else.
//! - From a CSR the platform takes the public key only, after checking the request's
//!   signature (proof that the requester holds the private key) and that its common
//!   name is the device the certificate is for. Everything else in the certificate (no
//!   CA flag, key usage, `clientAuth`, no alternative names) is the platform's choice,
//!   so a request cannot ask for more than a device certificate.
//! - Validity uses rcgen's defaults (not before 1975, not after 4096); expiry is not
//!   implemented. Revocation is by fingerprint
//!   ([`RevokedCertificates`](super::RevokedCertificates), checked by the QUIC
//!   platform), not by CRL or OCSP: one platform is the only relying party.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::message::DeviceId;

/// Certificate generation or parsing failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused (bad key, bad parameters, unparsable CA).
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate is not X.509 DER.
    #[error("unparsable certificate: {0}")]
    Parse(String),
    /// The certificate carries no usable device id.
    #[error("certificate has no valid device id: {0}")]
    NoDeviceId(String),
    /// The certificate signing request does not parse, or its signature does not verify.
    #[error("unusable certificate signing request: {0}")]
    Csr(String),
    /// The request names another device than the one the certificate is for.
    #[error("the certificate signing request is for {found:?}, not for {expected}")]
    CsrDeviceMismatch {
        /// The device the certificate is for.
        expected: DeviceId,
        /// The common name in the request (or why it has no usable one).
        found: String,
    },
}

/// A device's key pair and its certificate signing request, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCsr {
    /// The certificate signing request (PKCS#10 PEM): send it to the platform.
    pub csr_pem: String,
    /// The private key (PKCS#8 PEM): keep it on the device.
    pub key_pem: String,
}

/// A CA: certificate and private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// CA certificate (PEM); devices and the platform trust it.
    pub cert_pem: String,
    /// CA private key (PKCS#8 PEM); keep it on the platform only.
    pub key_pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PKCS#8 PEM).
    pub key_pem: String,
}

/// Creates a new self-signed CA named `common_name`.
///
/// # Errors
/// [`CertError::Generate`].
pub fn init_ca(common_name: &str) -> Result<CaFiles, CertError> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Voltex");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CaFiles {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What every certificate the CA signs for a device or server has, whatever asked.
fn leaf_cert_params(params: &mut CertificateParams, usage: ExtendedKeyUsagePurpose) {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
}

fn sign(
    ca: &CaFiles,
    mut params: CertificateParams,
    usage: ExtendedKeyUsagePurpose,
) -> Result<IssuedCert, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    leaf_cert_params(&mut params, usage);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a client certificate for `device`, signed by `ca`; its common name is the id.
///
/// # Errors
/// [`CertError::Generate`] (also when the CA files do not parse).
pub fn issue_device(ca: &CaFiles, device: &DeviceId) -> Result<IssuedCert, CertError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, device.as_str());
    sign(ca, params, ExtendedKeyUsagePurpose::ClientAuth)
}

/// Makes a new key pair for `device` and a certificate signing request for it, signed
/// with that key, whose subject common name is the device id. Run on the device.
///
/// # Errors
/// [`CertError::Generate`].
pub fn device_csr(device: &DeviceId) -> Result<DeviceCsr, CertError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, device.as_str());
    let key = KeyPair::generate()?;
    let request = params.serialize_request(&key)?;
    Ok(DeviceCsr {
        csr_pem: request.pem()?,
        key_pem: key.serialize_pem(),
    })
}

/// Signs a device's certificate signing request with `ca`: the certificate has the
/// request's public key, common name `device`, and otherwise exactly what
/// [`issue_device`] gives (see the module's invariants). Returns the certificate (PEM).
///
/// # Errors
/// [`CertError::Csr`] for text that is not a PEM PKCS#10 request or whose signature
/// does not verify; [`CertError::CsrDeviceMismatch`] when its subject is not exactly
/// one common name equal to `device`; [`CertError::Generate`] if signing fails.
pub fn sign_device_csr(
    ca: &CaFiles,
    device: &DeviceId,
    csr_pem: &str,
) -> Result<String, CertError> {
    use rustls::pki_types::CertificateSigningRequestDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|error| CertError::Csr(format!("not a PEM certificate request: {error}")))?;
    // Parses and verifies the request's self-signature.
    let request = rcgen::CertificateSigningRequestParams::from_der(&der)
        .map_err(|error| CertError::Csr(error.to_string()))?;
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|error| CertError::Csr(error.to_string()))?;
    let mismatch = |found: String| CertError::CsrDeviceMismatch {
        expected: device.clone(),
        found,
    };
    let mut names = parsed.certification_request_info.subject.iter_common_name();
    let name = names
        .next()
        .ok_or_else(|| mismatch("no common name".into()))?
        .as_str()
        .map_err(|error| mismatch(error.to_string()))?;
    if names.next().is_some() {
        return Err(mismatch("several common names".into()));
    }
    if name != device.as_str() {
        return Err(mismatch(name.to_string()));
    }
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, device.as_str());
    leaf_cert_params(&mut params, ExtendedKeyUsagePurpose::ClientAuth);
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let signed = rcgen::CertificateSigningRequestParams {
        params,
        public_key: request.public_key,
    }
    .signed_by(&issuer)?;
    Ok(signed.pem())
}

/// Issues the platform's server certificate for `names` (DNS names or IP addresses, e.g.
/// `localhost`, `127.0.0.1`), signed by `ca`.
///
/// # Errors
/// [`CertError::Generate`] (also for a name that is neither a DNS name nor an IP).
pub fn issue_server(ca: &CaFiles, names: &[String]) -> Result<IssuedCert, CertError> {
    let mut params = CertificateParams::new(names.to_vec())?;
    let common_name = names.first().map_or("voltex-platform", String::as_str);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    sign(ca, params, ExtendedKeyUsagePurpose::ServerAuth)
}

/// The device id in a (verified) client certificate: its single subject common name.
///
/// # Errors
/// [`CertError::Parse`] for bytes that are not a certificate, [`CertError::NoDeviceId`]
/// for no, several, or an invalid common name.
pub fn device_id_from_cert_der(der: &[u8]) -> Result<DeviceId, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| CertError::Parse(error.to_string()))?;
    let mut names = cert.subject().iter_common_name();
    let first = names
        .next()
        .ok_or_else(|| CertError::NoDeviceId("no common name".into()))?;
    if names.next().is_some() {
        return Err(CertError::NoDeviceId("several common names".into()));
    }
    let text = first
        .as_str()
        .map_err(|error| CertError::NoDeviceId(error.to_string()))?;
    DeviceId::new(text).map_err(|error| CertError::NoDeviceId(error.to_string()))
}

/// The SHA-256 fingerprint of a certificate (of its DER encoding), lowercase hex: the
/// form `devices.cert_fingerprint_sha256` stores.
///
/// # Errors
/// [`CertError::Parse`] if `cert_pem` holds no PEM certificate.
pub fn fingerprint_sha256(cert_pem: &str) -> Result<String, CertError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|error| CertError::Parse(error.to_string()))?;
    Ok(fingerprint_sha256_der(der.as_ref()))
}

/// [`fingerprint_sha256`] of a certificate's DER bytes.
pub fn fingerprint_sha256_der(cert_der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(cert_der)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn device_certificate_carries_the_device_id_as_common_name() {
        let ca = init_ca("test CA").unwrap();
        let device = DeviceId::new("bat-0042").unwrap();
        let issued = issue_device(&ca, &device).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(device_id_from_cert_der(&der).unwrap(), device);
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        assert!(matches!(
            device_id_from_cert_der(&ca_der),
            Err(CertError::NoDeviceId(_))
        ));
        assert!(matches!(
            device_id_from_cert_der(b"not a certificate"),
            Err(CertError::Parse(_))
        ));
    }

    #[test]
    fn fingerprints_are_sha256_of_the_der_and_differ_per_certificate() {
        let ca = init_ca("test CA").unwrap();
        let device = DeviceId::new("bat-0042").unwrap();
        let first = issue_device(&ca, &device).unwrap();
        let second = issue_device(&ca, &device).unwrap();
        let fingerprint = fingerprint_sha256(&first.cert_pem).unwrap();
        assert_eq!(fingerprint.len(), 64);
        assert!(
            fingerprint
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(fingerprint, fingerprint_sha256(&first.cert_pem).unwrap());
        assert_ne!(fingerprint, fingerprint_sha256(&second.cert_pem).unwrap());
        assert!(matches!(
            fingerprint_sha256("no PEM here"),
            Err(CertError::Parse(_))
        ));
    }

    fn cert_der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn a_signed_csr_is_a_device_certificate_for_the_device_held_key() {
        let ca = init_ca("test CA").unwrap();
        let device = DeviceId::new("bat-0042").unwrap();
        let request = device_csr(&device).unwrap();
        let cert_pem = sign_device_csr(&ca, &device, &request.csr_pem).unwrap();
        let der = cert_der(&cert_pem);
        assert_eq!(device_id_from_cert_der(&der).unwrap(), device);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        // The key the device kept is the certificate's key.
        let key = KeyPair::from_pem(&request.key_pem).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        assert!(!cert.is_ca());
        let usage = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.client_auth && !usage.server_auth);
        // Signed by the CA.
        let ca_der = cert_der(&ca.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn a_csr_asking_for_more_gets_a_plain_device_certificate() {
        let ca = init_ca("test CA").unwrap();
        let device = DeviceId::new("bat-0042").unwrap();
        let mut params = CertificateParams::new(vec!["platform.example".into()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, device.as_str());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert_pem = sign_device_csr(&ca, &device, &csr_pem).unwrap();
        let der = cert_der(&cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca(), "no CA certificate from a request");
        assert!(cert.subject_alternative_name().unwrap().is_none());
        let usage = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.client_auth && !usage.server_auth);
    }

    #[test]
    fn unusable_or_foreign_csrs_are_refused_with_their_reason() {
        let ca = init_ca("test CA").unwrap();
        let device = DeviceId::new("bat-0042").unwrap();
        let other = DeviceId::new("bat-0043").unwrap();
        // Another device's request.
        let foreign = device_csr(&other).unwrap();
        match sign_device_csr(&ca, &device, &foreign.csr_pem) {
            Err(CertError::CsrDeviceMismatch { expected, found }) => {
                assert_eq!((expected, found.as_str()), (device.clone(), "bat-0043"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        // No common name at all.
        let key = KeyPair::generate().unwrap();
        let nameless = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        assert!(matches!(
            sign_device_csr(&ca, &device, &nameless),
            Err(CertError::CsrDeviceMismatch { .. })
        ));
        // Not PEM, or a certificate instead of a request.
        for text in ["", "not PEM", &ca.cert_pem] {
            assert!(
                matches!(sign_device_csr(&ca, &device, text), Err(CertError::Csr(_))),
                "{text:?}"
            );
        }
        // A request whose signature does not verify: one base64 character of the last
        // line (inside the signature, at the end of the DER) changed.
        let good = device_csr(&device).unwrap();
        let lines: Vec<&str> = good.csr_pem.lines().collect();
        let last_body = lines.len() - 2;
        let mut tampered_lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let first = tampered_lines[last_body].remove(0);
        let replacement = if first == 'A' { 'B' } else { 'A' };
        tampered_lines[last_body].insert(0, replacement);
        let tampered = tampered_lines.join("\n");
        assert!(matches!(
            sign_device_csr(&ca, &device, &tampered),
            Err(CertError::Csr(_))
        ));
        // Truncated: the first half of the body lines only.
        let mut truncated_lines = lines[..1 + (lines.len() - 2) / 2].to_vec();
        truncated_lines.push(lines[lines.len() - 1]);
        let truncated = truncated_lines.join("\n");
        assert!(matches!(
            sign_device_csr(&ca, &device, &truncated),
            Err(CertError::Csr(_))
        ));
    }
}
