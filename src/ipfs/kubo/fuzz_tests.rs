//! Property tests that feed the Kubo RPC stream readers hostile bodies: the
//! NDJSON line framing (split into arbitrary chunks) and the decoding of
//! `pin/ls`, `pin/add` progress and `repo/gc` lines and of error bodies,
//! with arbitrary bytes, mutations of Kubo's lines, and lines whose fields
//! hold values of any type and length. Each must answer a value or an
//! error (never panic), and every error stays short whatever Kubo sent.
//!
//! Bounded for CI: bodies of a few KiB; the case counts keep each test to
//! a few seconds in a debug build.

use bytes::Bytes;
use proptest::prelude::*;

use super::lines::{LineError, LineReader};
use super::wire::{AddPinLine, GcLine, decode, http_error, parse_ls_line};
use crate::ipfs::IpfsError;
use crate::testkit::fuzz::{bytes, mutated};

/// Longest error text a Kubo answer may produce, whatever its size.
const MAX_ERROR: usize = 2048;

const LINES: &[&str] = &[
    r#"{"Cid":"bafkreicj6mqa3onajnsmzfzv45kqfyodqttzmg35se3rtytspfrcgpeoky","Type":"recursive"}"#,
    r#"{"Keys":{"QmYcC9As6BdcKj5GhVWGz1KBUWgG2qNi7N94pb7YH7yHqT":{"Type":"direct"}}}"#,
    r#"{"Progress":12,"Bytes":4096}"#,
    r#"{"Pins":["bafkreicj6mqa3onajnsmzfzv45kqfyodqttzmg35se3rtytspfrcgpeoky"]}"#,
    r#"{"Key":{"/":"bafkreicj6mqa3onajnsmzfzv45kqfyodqttzmg35se3rtytspfrcgpeoky"}}"#,
    r#"{"Error":"could not remove block"}"#,
    r#"{"Message":"not pinned","Code":0,"Type":"error"}"#,
];
const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"null",
    b"\"error\"",
    b"1e999",
    b"-1",
    b"\xff",
    b"\\u0000",
    b"\"Type\":",
    b"\"Message\":",
    b"\"Keys\":{",
];

/// A JSON value of any type; strings up to 3000 characters.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        ("[a-zA-Z0-9 ]{0,8}", 0usize..3000)
            .prop_map(|(s, n)| serde_json::to_string(&s.repeat(n / 8 + 1)).unwrap()),
        Just(r#""error""#.to_string()),
        Just(r#"{"Type":"recursive"}"#.to_string()),
        ("[a-z]{0,8}", 0usize..400).prop_map(|(s, n)| format!(
            "[{}]",
            vec![serde_json::to_string(&s).unwrap(); n].join(",")
        )),
    ]
}

/// A line with Kubo's field names holding values of any type.
fn shaped_line() -> impl Strategy<Value = Vec<u8>> {
    let field = proptest::sample::select(
        &[
            "Cid", "Type", "Keys", "Message", "Code", "Pins", "Progress", "Bytes", "Key", "Error",
        ][..],
    );
    proptest::collection::vec((field, value()), 0..4).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    })
}

fn check_error(e: &IpfsError) {
    let text = e.to_string();
    assert!(
        text.len() <= MAX_ERROR,
        "a {}-byte error: {text:.200}",
        text.len()
    );
}

fn check_message(m: Option<String>) {
    if let Some(m) = m {
        assert!(m.len() <= MAX_ERROR, "a {}-byte message", m.len());
    }
}

/// Every decoding a line of a streamed call goes through.
fn check_line(line: &[u8]) {
    match parse_ls_line(line) {
        Ok(pins) => assert!(pins.len() <= line.len() / 8 + 1),
        Err(e) => check_error(&e),
    }
    match decode::<AddPinLine>("pin/add", line) {
        Ok(l) => check_message(l.error_message()),
        Err(e) => check_error(&e),
    }
    match decode::<GcLine>("repo/gc", line) {
        Ok(l) => check_message(l.error_message()),
        Err(e) => check_error(&e),
    }
    for status in [400, 500] {
        check_error(&http_error(
            reqwest::StatusCode::from_u16(status).unwrap(),
            line,
        ));
    }
}

/// Reads `body`, delivered in chunks cut at `cuts`, line by line.
fn read_lines(body: &[u8], cuts: &[usize]) -> Result<Vec<String>, String> {
    let mut chunks = Vec::new();
    let mut rest = body;
    for c in cuts {
        let (a, b) = rest.split_at((*c).min(rest.len()));
        chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(a)));
        rest = b;
    }
    chunks.push(Ok(Bytes::copy_from_slice(rest)));
    let resp = axum::http::Response::new(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut reader = LineReader::new(reqwest::Response::from(resp));
        let mut out = Vec::new();
        loop {
            match reader.next_line().await {
                Ok(Some(l)) => out.push(l),
                Ok(None) => return Ok(out),
                Err(LineError::TooLong) => return Err("too long".into()),
                Err(LineError::NotUtf8) => return Err("not utf-8".into()),
                Err(LineError::Transport(e)) => return Err(e.to_string()),
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn kubo_lines_of_any_shape_decode_or_fail_with_a_short_error(line in shaped_line()) {
        check_line(&line);
    }

    #[test]
    fn kubo_lines_of_arbitrary_bytes_decode_or_fail_with_a_short_error(line in bytes(1024)) {
        check_line(&line);
    }

    #[test]
    fn kubo_line_reader_splits_any_body_into_its_lines(
        body in prop_oneof![
            bytes(2048),
            proptest::collection::vec(
                mutated(LINES.iter().map(|l| format!("{l}\n").into_bytes()).collect(), TOKENS, 3),
                0..6,
            )
            .prop_map(|l| l.concat()),
        ],
        cuts in proptest::collection::vec(0usize..64, 0..8),
    ) {
        match read_lines(&body, &cuts) {
            Ok(lines) => {
                // The lines are the body's non-blank lines, without their
                // line endings, whatever the chunking.
                let text = String::from_utf8(body.clone()).unwrap();
                let want: Vec<&str> = text
                    .split('\n')
                    .map(|l| l.strip_suffix('\r').unwrap_or(l))
                    .filter(|l| !l.bytes().all(|b| b.is_ascii_whitespace()))
                    .collect();
                prop_assert_eq!(&lines, &want);
                for l in &lines {
                    check_line(l.as_bytes());
                }
            }
            Err(e) => prop_assert!(std::str::from_utf8(&body).is_err(), "{}", e),
        }
    }
}

/// Found by `kubo_lines_of_any_shape_decode_or_fail_with_a_short_error`:
/// an error body's `Message`, a line's mistyped value (which serde quotes
/// whole), an unknown pin type and an error object's message were copied
/// into the error in full, so a megabyte line made a megabyte error.
#[test]
fn a_long_value_from_kubo_is_cut_in_the_error() {
    let long = "9nj".repeat(400_000);
    let lines = [
        format!(r#"{{"Message":"{long}","Code":1}}"#),
        format!(r#"{{"Cid":"{long}","Progress":"{long}"}}"#),
        format!(
            r#"{{"Cid":"bafkreicj6mqa3onajnsmzfzv45kqfyodqttzmg35se3rtytspfrcgpeoky","Type":"{long}"}}"#
        ),
        format!(r#"{{"Message":"{long}","Type":"error"}}"#),
        format!(r#"{{"Error":"{long}"}}"#),
    ];
    for line in &lines {
        check_line(line.as_bytes());
    }
    let e = http_error(reqwest::StatusCode::BAD_REQUEST, lines[0].as_bytes());
    assert!(
        e.to_string().starts_with("kubo answered 400: 9nj9nj"),
        "{e}"
    );
    assert!(e.to_string().ends_with('…'));
}
