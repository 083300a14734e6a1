//! Property tests for bad PEM input to the coordinator's and sidecar's tonic TLS configs
//! (`client_config`, `server_config`) and to CRL reading (issue 14, item 10): random bytes,
//! truncated and mutated valid PEM, a key where a certificate belongs (and the other way
//! round), empty files. They never panic, a refusal names the bad file, and no error ever
//! shows key material.
use std::path::Path;
use std::sync::LazyLock;

use proptest::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};

use super::*;

/// A CA, a leaf it signed with the leaf's key, and a CRL the CA signed; made once.
struct Material {
    ca: String,
    cert: String,
    key: String,
    crl: String,
}

static MATERIAL: LazyLock<Material> = LazyLock::new(|| {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "fuzz CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2026, 1, 1),
        next_update: rcgen::date_time_ymd(2036, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    Material {
        ca: ca_pem,
        cert: cert.pem(),
        key: key.serialize_pem(),
        crl: crl.pem().unwrap(),
    }
});

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// Every 12-character window of the key's base64 body, and its first 6 bytes as a
/// byte-list dump (`77, 73, 73, ...`, how the PEM parser quotes a malformed line).
fn assert_no_key_material(message: &str) -> Result<(), TestCaseError> {
    for line in MATERIAL.key.lines().filter(|l| !l.starts_with("-----")) {
        for window in line.as_bytes().windows(12) {
            let text = String::from_utf8(window.to_vec()).unwrap();
            let dumped: Vec<String> = window[..6].iter().map(u8::to_string).collect();
            for fragment in [text, dumped.join(", ")] {
                prop_assert!(
                    !message.contains(&fragment),
                    "the error shows key material `{fragment}`: {message}"
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Ca,
    Cert,
    Key,
    Crl,
}

impl Which {
    fn text(self) -> &'static str {
        match self {
            Which::Ca => &MATERIAL.ca,
            Which::Cert => &MATERIAL.cert,
            Which::Key => &MATERIAL.key,
            Which::Crl => &MATERIAL.crl,
        }
    }
}

/// What goes into a file under test.
#[derive(Debug, Clone)]
enum Content {
    Empty,
    Random(Vec<u8>),
    /// A valid file cut after this many bytes (modulo its length).
    Truncated(Which, usize),
    /// A valid file with bytes flipped (positions modulo its length).
    Flipped(Which, Vec<(usize, u8)>),
    /// A valid file with some of its line ends removed, joining lines.
    LinesJoined(Which, Vec<usize>),
    /// Another valid file than the one expected.
    Valid(Which),
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Empty => Vec::new(),
            Content::Random(bytes) => bytes.clone(),
            Content::Truncated(which, at) => {
                let text = which.text().as_bytes();
                text[..at % text.len()].to_vec()
            }
            Content::Flipped(which, flips) => {
                let mut bytes = which.text().as_bytes().to_vec();
                let len = bytes.len();
                for (at, mask) in flips {
                    bytes[at % len] ^= mask;
                }
                bytes
            }
            Content::LinesJoined(which, joins) => {
                let mut lines: Vec<String> = which.text().lines().map(str::to_owned).collect();
                for at in joins {
                    if lines.len() > 1 {
                        let i = at % (lines.len() - 1);
                        let next = lines.remove(i + 1);
                        lines[i].push_str(&next);
                    }
                }
                (lines.join("\n") + "\n").into_bytes()
            }
            Content::Valid(which) => which.text().as_bytes().to_vec(),
        }
    }
}

fn arb_which() -> impl Strategy<Value = Which> {
    prop::sample::select(vec![Which::Ca, Which::Cert, Which::Key, Which::Crl])
}

/// Bad content, mostly starting from the file that belongs in the slot (`own`).
fn arb_bad(own: Which) -> impl Strategy<Value = Content> {
    let base = prop_oneof![3 => Just(own), 1 => arb_which()];
    prop_oneof![
        1 => Just(Content::Empty),
        2 => prop::collection::vec(any::<u8>(), 1..600).prop_map(Content::Random),
        2 => (base.clone(), any::<usize>()).prop_map(|(w, at)| Content::Truncated(w, at)),
        3 => (base.clone(), prop::collection::vec((any::<usize>(), 1u8..=255), 1..4))
            .prop_map(|(w, flips)| Content::Flipped(w, flips)),
        3 => (base, prop::collection::vec(any::<usize>(), 1..4))
            .prop_map(|(w, joins)| Content::LinesJoined(w, joins)),
        1 => arb_which().prop_map(Content::Valid),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Ca,
    Cert,
    Key,
}

fn arb_slot_and_content() -> impl Strategy<Value = (Slot, Content)> {
    prop_oneof![
        arb_bad(Which::Ca).prop_map(|c| (Slot::Ca, c)),
        arb_bad(Which::Cert).prop_map(|c| (Slot::Cert, c)),
        arb_bad(Which::Key).prop_map(|c| (Slot::Key, c)),
    ]
}

struct Files {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

/// Valid files, but for the one in `slot`.
fn files(slot: Slot, content: &Content) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        _dir: dir,
    };
    std::fs::write(&files.ca, MATERIAL.ca.as_bytes()).unwrap();
    std::fs::write(&files.cert, MATERIAL.cert.as_bytes()).unwrap();
    std::fs::write(&files.key, MATERIAL.key.as_bytes()).unwrap();
    std::fs::write(files.bad(slot), content.bytes()).unwrap();
    files
}

impl Files {
    fn bad(&self, slot: Slot) -> &Path {
        match slot {
            Slot::Ca => &self.ca,
            Slot::Cert => &self.cert,
            Slot::Key => &self.key,
        }
    }
}

fn check_refusal(result: Result<(), TlsError>, bad: &Path) -> Result<(), TestCaseError> {
    if let Err(err) = result {
        let message = err.to_string();
        prop_assert!(
            message.contains(&bad.display().to_string()),
            "the error does not name `{}`: {message}",
            bad.display()
        );
        assert_no_key_material(&message)?;
    }
    Ok(())
}

#[test]
fn the_material_mutated_here_is_accepted() {
    let files = files(Slot::Key, &Content::Valid(Which::Key));
    client_config(&files.ca, &files.cert, &files.key, None).unwrap();
    server_config(&files.cert, &files.key, &files.ca).unwrap();
    crl::revoked_serials(MATERIAL.crl.as_bytes(), MATERIAL.ca.as_bytes()).unwrap();
}

/// Before the files were parsed here, a damaged key (or a key given as the certificate)
/// was accepted by `client_config` and failed only at connect time, inside tonic, without
/// the file's path.
#[test]
fn a_damaged_key_is_refused_when_the_config_is_made() {
    let damaged = Content::Truncated(Which::Key, MATERIAL.key.len() / 2);
    let truncated_key = files(Slot::Key, &damaged);
    let message = client_config(
        &truncated_key.ca,
        &truncated_key.cert,
        &truncated_key.key,
        None,
    )
    .expect_err("a truncated key is refused")
    .to_string();
    assert!(
        message.contains(&truncated_key.key.display().to_string()),
        "{message}"
    );
    assert_no_key_material(&message).unwrap();

    let key_as_cert = files(Slot::Cert, &Content::Valid(Which::Key));
    let message = client_config(&key_as_cert.ca, &key_as_cert.cert, &key_as_cert.key, None)
        .expect_err("a key as the certificate is refused")
        .to_string();
    assert!(
        message.contains(&key_as_cert.cert.display().to_string()),
        "{message}"
    );
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn bad_client_files_are_refused_by_path_without_key_material(
        (slot, content) in arb_slot_and_content(),
    ) {
        let files = files(slot, &content);
        let result = client_config(&files.ca, &files.cert, &files.key, Some("localhost"));
        check_refusal(result.map(drop), files.bad(slot))?;
    }

    #[test]
    fn bad_server_files_are_refused_by_path_without_key_material(
        (slot, content) in arb_slot_and_content(),
    ) {
        let files = files(slot, &content);
        let result = server_config(&files.cert, &files.key, &files.ca);
        check_refusal(result.map(drop), files.bad(slot))?;
    }

    /// The CRL parser (x509-parser) on random and damaged CRLs and CA files never panics,
    /// and a refusal never quotes key material.
    #[test]
    fn bad_crls_never_panic(crl in arb_bad(Which::Crl), ca in arb_bad(Which::Ca)) {
        if let Err(err) = crl::revoked_serials(&crl.bytes(), &ca.bytes()) {
            assert_no_key_material(&err.to_string())?;
        }
        if let Err(err) = crl::revoked_serials(&crl.bytes(), MATERIAL.ca.as_bytes()) {
            assert_no_key_material(&err.to_string())?;
        }
    }
}
