//! Property tests for bad PEM input to the sidecar's TLS set-up (issue 14, item 10): the
//! acceptor (`tls::acceptor`) and the CRL read at start (`auth::Authorize::mtls`) get random
//! bytes, truncated and mutated valid PEM, a key where a certificate belongs (and the other
//! way round) and empty files. They never panic, a refusal names the bad file, and no error
//! ever shows key material.
use std::path::Path;
use std::sync::LazyLock;

use proptest::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};

use super::auth::Authorize;
use super::tls::acceptor;
use crate::config::TlsConfig;

/// Valid PEM files that belong together: a CA, a leaf it signed with the leaf's key, and a
/// CRL the CA signed. Made once: key generation is the slow part.
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

/// Fragments of the key that must never appear in an error: every 12-character window of
/// its base64 body, and the same bytes as a byte-list dump (`[77, 73, 73, ...]`, how the
/// PEM parser quotes a malformed line).
fn key_fragments() -> Vec<String> {
    let body: Vec<&str> = MATERIAL
        .key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut fragments = Vec::new();
    for line in body {
        let bytes = line.as_bytes();
        for window in bytes.windows(12) {
            fragments.push(String::from_utf8(window.to_vec()).unwrap());
            let dumped: Vec<String> = window[..6].iter().map(u8::to_string).collect();
            fragments.push(dumped.join(", "));
        }
    }
    fragments
}

fn assert_no_key_material(message: &str) -> Result<(), TestCaseError> {
    for fragment in key_fragments() {
        prop_assert!(
            !message.contains(&fragment),
            "the error shows key material `{fragment}`: {message}"
        );
    }
    Ok(())
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
    /// Another valid file than the one expected (a key where a certificate belongs, ...).
    Valid(Which),
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

/// Bad content, starting from the file that belongs in the slot (`own`) most of the time.
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

/// Which of the acceptor's three files is bad.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Cert,
    Key,
    ClientCa,
}

fn arb_slot_and_content() -> impl Strategy<Value = (Slot, Content)> {
    prop_oneof![
        arb_bad(Which::Cert).prop_map(|c| (Slot::Cert, c)),
        arb_bad(Which::Key).prop_map(|c| (Slot::Key, c)),
        arb_bad(Which::Ca).prop_map(|c| (Slot::ClientCa, c)),
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn the_material_mutated_here_is_accepted() {
    agentfleet_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca, crl) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
        dir.path().join("crl.pem"),
    );
    write(&cert, MATERIAL.cert.as_bytes());
    write(&key, MATERIAL.key.as_bytes());
    write(&ca, MATERIAL.ca.as_bytes());
    write(&crl, MATERIAL.crl.as_bytes());
    acceptor(&cert, &key, &ca).unwrap();
    Authorize::mtls("sql1", &tls_config(&ca, &crl)).unwrap();
}

/// The PEM parser quotes a malformed `-----BEGIN` line in its error; in a key file whose
/// line end after BEGIN is lost, that line holds the start of the key. Found by
/// `bad_acceptor_files_are_refused_by_path_without_key_material`.
#[test]
fn a_key_with_its_begin_line_run_into_the_body_is_not_quoted() {
    agentfleet_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    let damaged_key = Content::LinesJoined(Which::Key, vec![0]).bytes();
    write(&cert, MATERIAL.cert.as_bytes());
    write(&key, &damaged_key);
    write(&ca, MATERIAL.ca.as_bytes());
    let message = acceptor(&cert, &key, &ca).err().unwrap().to_string();
    assert!(message.contains(&key.display().to_string()), "{message}");
    assert_no_key_material(&message).unwrap();

    // The same key given where the certificate belongs (paths swapped in the config).
    write(&cert, &damaged_key);
    write(&key, MATERIAL.key.as_bytes());
    let message = acceptor(&cert, &key, &ca).err().unwrap().to_string();
    assert!(message.contains(&cert.display().to_string()), "{message}");
    assert_no_key_material(&message).unwrap();
}

fn tls_config(client_ca: &Path, crl: &Path) -> TlsConfig {
    TlsConfig {
        cert: client_ca.with_file_name("unused.pem"),
        key: client_ca.with_file_name("unused.key"),
        client_ca: client_ca.to_owned(),
        allow_clients: vec!["coordinator".into()],
        crl: Some(crl.to_owned()),
        revoked: Vec::new(),
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn bad_acceptor_files_are_refused_by_path_without_key_material(
        (slot, content) in arb_slot_and_content(),
    ) {
        agentfleet_common::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("ca.pem"),
        );
        write(&cert, MATERIAL.cert.as_bytes());
        write(&key, MATERIAL.key.as_bytes());
        write(&ca, MATERIAL.ca.as_bytes());
        let bad = match slot {
            Slot::Cert => &cert,
            Slot::Key => &key,
            Slot::ClientCa => &ca,
        };
        write(bad, &content.bytes());
        // A mutation can leave a file valid (a flipped bit in a line end, a PEM block
        // after the first one cut off): then there is nothing to refuse.
        if let Err(err) = acceptor(&cert, &key, &ca) {
            let message = err.to_string();
            prop_assert!(
                message.contains(&bad.display().to_string()),
                "the error does not name `{}`: {message}", bad.display()
            );
            assert_no_key_material(&message)?;
        }
    }

    #[test]
    fn bad_crl_files_are_refused_by_path_without_key_material(
        content in arb_bad(Which::Crl),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (ca, crl) = (dir.path().join("ca.pem"), dir.path().join("crl.pem"));
        write(&ca, MATERIAL.ca.as_bytes());
        write(&crl, &content.bytes());
        if let Err(err) = Authorize::mtls("sql1", &tls_config(&ca, &crl)) {
            let message = err.to_string();
            prop_assert!(message.contains(&crl.display().to_string()), "{message}");
            assert_no_key_material(&message)?;
        }
    }
}
