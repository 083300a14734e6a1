//! Reading a certificate revocation list (CRL) as `coordinator pki revoke` writes it: the
//! serials it revokes, trusted only once its signature checks out against the CA, so a
//! CRL from another CA (or a tampered one) is an error rather than a silent no-op.
use std::collections::HashSet;

use x509_parser::pem::Pem;

use super::identity::serial_hex;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrlError {
    #[error("it is not a PEM or DER certificate revocation list: {0}")]
    Parse(String),
    #[error("the CA file holds no certificate")]
    NoCa,
    #[error(
        "it was not signed by the CA (issuer `{issuer}`); make it with `coordinator pki revoke` in the PKI directory of that CA"
    )]
    NotSignedByCa { issuer: String },
}

/// The serials (in [`serial_hex`] form) a CRL revokes, after checking that one of the
/// certificates in `ca_pem` signed it. `crl` is PEM (`X509 CRL`) or DER.
pub fn revoked_serials(crl: &[u8], ca_pem: &[u8]) -> Result<HashSet<String>, CrlError> {
    let der = if crl.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(crl).map_err(|e| CrlError::Parse(e.to_string()))?;
        if pem.label != "X509 CRL" {
            return Err(CrlError::Parse(format!(
                "the PEM block is `{}`, not `X509 CRL`",
                pem.label
            )));
        }
        pem.contents
    } else {
        crl.to_vec()
    };
    let (_, list) =
        x509_parser::parse_x509_crl(&der).map_err(|e| CrlError::Parse(e.to_string()))?;

    let cas: Vec<Pem> = Pem::iter_from_buffer(ca_pem)
        .filter_map(Result::ok)
        .filter(|pem| pem.label == "CERTIFICATE")
        .collect();
    if cas.is_empty() {
        return Err(CrlError::NoCa);
    }
    let signed = cas.iter().any(|pem| {
        // The signature is the proof; issuer names are not compared, since an equal name
        // may be encoded differently.
        pem.parse_x509()
            .is_ok_and(|ca| list.verify_signature(ca.public_key()).is_ok())
    });
    if !signed {
        return Err(CrlError::NotSignedByCa {
            issuer: list.issuer().to_string(),
        });
    }
    Ok(list
        .iter_revoked_certificates()
        .map(|revoked| serial_hex(revoked.raw_serial()))
        .collect())
}
