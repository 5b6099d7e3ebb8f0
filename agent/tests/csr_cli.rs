//! `voltex-agent csr`: the real binary makes the device's key pair and a certificate
//! signing request; the key file is private (mode 0600) and never overwritten; the
//! request names the device and the platform's CA signs it into a certificate for that
//! key; a bad device id is refused before anything is written.

use std::process::Command;

use voltex_dispatch::DeviceId;
use voltex_dispatch::transport::certs;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voltex-agent"))
}

#[test]
fn csr_writes_a_private_key_and_a_request_the_platform_signs_for_that_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("device.key");
    let csr = dir.path().join("device.csr");
    let output = agent()
        .args(["csr", "--device-id", "bat-0007", "--key-out"])
        .arg(&key)
        .arg("--csr-out")
        .arg(&csr)
        .output()
        .expect("run voltex-agent csr");
    assert!(output.status.success(), "{output:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
    }
    let key_pem = std::fs::read_to_string(&key).expect("key");
    let csr_pem = std::fs::read_to_string(&csr).expect("csr");
    assert!(key_pem.contains("PRIVATE KEY"));
    assert!(!csr_pem.contains("PRIVATE KEY"), "the request holds no key");

    let ca = certs::init_ca("csr-cli test CA").expect("CA");
    let device = DeviceId::new("bat-0007").expect("id");
    // Signing checks the request's signature and that it names this device.
    let cert_pem = certs::sign_device_csr(&ca, &device, &csr_pem).expect("signed");
    certs::fingerprint_sha256(&cert_pem).expect("a certificate");
    // Not for another device.
    assert!(matches!(
        certs::sign_device_csr(&ca, &DeviceId::new("bat-0008").expect("id"), &csr_pem),
        Err(certs::CertError::CsrDeviceMismatch { .. })
    ));

    // A second run never replaces the key.
    let again = agent()
        .args(["csr", "--device-id", "bat-0007", "--key-out"])
        .arg(&key)
        .output()
        .expect("run again");
    assert!(!again.status.success(), "an existing key is not replaced");
    assert_eq!(std::fs::read_to_string(&key).expect("key"), key_pem);

    // Without --csr-out the request goes to standard output.
    let key2 = dir.path().join("second.key");
    let printed = agent()
        .args(["csr", "--device-id", "bat-0007", "--key-out"])
        .arg(&key2)
        .output()
        .expect("run to stdout");
    assert!(printed.status.success(), "{printed:?}");
    let printed_pem = String::from_utf8(printed.stdout).expect("utf-8");
    certs::sign_device_csr(&ca, &device, &printed_pem).expect("the printed request signs");
}

#[test]
fn csr_refuses_a_bad_device_id_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("device.key");
    let output = agent()
        .args(["csr", "--device-id", "bad id!", "--key-out"])
        .arg(&key)
        .output()
        .expect("run voltex-agent csr");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("device id"), "{stderr}");
    assert!(!key.exists(), "no key for a refused id");
}
