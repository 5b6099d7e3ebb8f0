//! The platform's certificate authority for QUIC mutual TLS (rcgen, ECDSA P-256).
//!
//! [`init_ca`] makes a self-signed CA; [`issue_device`] signs a client certificate whose
//! subject common name is the device id (the platform reads the id from there, never from
//! a message); [`issue_server`] signs the platform's server certificate;
//! [`fingerprint_sha256`] names a certificate. Everything is PEM text: files are the
//! caller's business (`voltex certs` in the root crate, the device API).
//!
//! # Invariants
//! - A device certificate has exactly one common name, a valid [`DeviceId`], and the
//!   `clientAuth` extended key usage; [`device_id_from_cert_der`] accepts nothing else.
//! - Validity uses rcgen's defaults (not before 1975, not after 4096); expiry and
//!   revocation (CRL/OCSP) are not implemented yet: remove a device by re-issuing the CA.

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

fn sign(
    ca: &CaFiles,
    mut params: CertificateParams,
    usage: ExtendedKeyUsagePurpose,
) -> Result<IssuedCert, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
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
    use sha2::Digest;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|error| CertError::Parse(error.to_string()))?;
    Ok(sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
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
}
