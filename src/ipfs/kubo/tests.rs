//! Tests of the client's pieces that need no server: addresses, error
//! bodies, and the shapes of Kubo's lines.

use super::*;
use crate::ipfs::PinKind;

#[test]
fn multiaddrs_become_urls() {
    assert_eq!(
        multiaddr_to_url("/ip4/127.0.0.1/tcp/5001").unwrap(),
        "http://127.0.0.1:5001"
    );
    assert_eq!(
        multiaddr_to_url("/ip6/::1/tcp/5001/http").unwrap(),
        "http://[::1]:5001"
    );
    assert_eq!(
        multiaddr_to_url("/dns4/kubo/tcp/5001").unwrap(),
        "http://kubo:5001"
    );
    assert!(multiaddr_to_url("/ip4/127.0.0.1/udp/5001").is_err());
    assert!(multiaddr_to_url("/ip4/127.0.0.1/tcp/99999").is_err());
}

#[test]
fn bad_addresses_are_refused_with_a_reason() {
    let t = Duration::from_secs(1);
    for (url, want) in [
        ("ftp://127.0.0.1", "unsupported scheme"),
        ("http://127.0.0.1:5001/?x=1", "query"),
        ("not a url", "relative URL"),
    ] {
        let e = KuboClient::new(url, t).unwrap_err().to_string();
        assert!(e.contains(want), "{url}: {e}");
    }
    let c = KuboClient::new("https://127.0.0.1:5001", t).unwrap();
    assert_eq!(c.base_url(), "https://127.0.0.1:5001");
    let c = KuboClient::new("http://127.0.0.1:5001/", t).unwrap();
    assert_eq!(c.base_url(), "http://127.0.0.1:5001");
    assert_eq!(
        c.endpoint_url("pin/add", &[("arg", "x y")]).as_str(),
        "http://127.0.0.1:5001/api/v0/pin/add?arg=x+y"
    );
    let c = KuboClient::new("http://h:1/kubo", t).unwrap();
    assert_eq!(
        c.endpoint_url("id", &[]).as_str(),
        "http://h:1/kubo/api/v0/id"
    );
}

#[test]
fn a_password_in_the_api_url_is_never_shown() {
    let c = KuboClient::new("http://u:s3cr3t@127.0.0.1:5001", Duration::from_secs(1)).unwrap();
    assert_eq!(c.base_url(), "http://127.0.0.1:5001");
    assert!(!format!("{c:?}").contains("s3cr3t"));
    let e = KuboClient::new("ftp://u:s3cr3t@127.0.0.1:5001", Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ftp://***@127.0.0.1:5001"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn error_bodies_are_parsed_or_shown() {
    let e = http_error(
        reqwest::StatusCode::INTERNAL_SERVER_ERROR,
        br#"{"Message":"not pinned or pinned indirectly","Code":0,"Type":"error"}"#,
    );
    assert_eq!(
        e.to_string(),
        "kubo answered 500: not pinned or pinned indirectly"
    );
    assert!(says_not_pinned(&e));
    let e = http_error(reqwest::StatusCode::NOT_FOUND, b"404 page not found\n");
    assert_eq!(e.to_string(), "kubo answered 404: 404 page not found");
    let e = http_error(reqwest::StatusCode::SERVICE_UNAVAILABLE, b"");
    assert_eq!(e.to_string(), "kubo answered 503: service unavailable");
}

#[test]
fn ls_lines_in_every_shape() {
    let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
    let key = CidKey::parse(v0).unwrap();
    let one = parse_ls_line(format!(r#"{{"Cid":"{v0}","Type":"recursive"}}"#).as_bytes());
    assert_eq!(
        one.unwrap(),
        vec![PinnedCid {
            cid: key,
            kind: PinKind::Recursive
        }]
    );
    let through = format!(r#"{{"Cid":"{v0}","Type":"indirect through {key}"}}"#);
    assert_eq!(
        parse_ls_line(through.as_bytes()).unwrap()[0].kind,
        PinKind::Indirect
    );
    let keys = format!(r#"{{"Keys":{{"{v0}":{{"Type":"direct","Name":""}}}}}}"#);
    assert_eq!(
        parse_ls_line(keys.as_bytes()).unwrap()[0].kind,
        PinKind::Direct
    );
    let err = parse_ls_line(br#"{"Message":"boom","Code":0,"Type":"error"}"#).unwrap_err();
    assert!(matches!(err, IpfsError::Aborted { ref message } if message == "boom"));
    assert!(matches!(
        parse_ls_line(b"\xff\x00"),
        Err(IpfsError::Garbage { .. })
    ));
    assert!(matches!(
        parse_ls_line(br#"{"Cid":"nope","Type":"recursive"}"#),
        Err(IpfsError::Garbage { .. })
    ));
    assert!(matches!(
        parse_ls_line(format!(r#"{{"Cid":"{v0}","Type":"weird"}}"#).as_bytes()),
        Err(IpfsError::Garbage { .. })
    ));
}

#[test]
fn heartbeats_carry_no_progress() {
    let beat: AddPinLine = decode("pin/add", b"{}").unwrap();
    assert_eq!(beat.error_message(), None);
    assert_eq!((beat.progress, beat.bytes, beat.pins), (None, None, None));
}
