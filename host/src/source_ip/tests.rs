//! The client-address rule, CIDR matching and the log budget.

use super::*;
use hyper::header::HeaderValue;

fn cidrs(entries: &[&str]) -> Cidrs {
    Cidrs::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn forwarded(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn issue_13_cidrs_match_v4_v6_and_mapped_peers() {
    let c = cidrs(&["203.0.113.7/32", "2001:db8::/32", "10.0.0.0/8", "127.0.0.2"]);
    assert!(c.contains(ip("203.0.113.7")));
    assert!(!c.contains(ip("203.0.113.8")));
    assert!(c.contains(ip("2001:db8:1::5")));
    assert!(!c.contains(ip("2001:db9::1")));
    assert!(c.contains(ip("10.200.3.4")));
    // A bare address is one host; a mapped IPv6 peer is its IPv4 address.
    assert!(c.contains(ip("127.0.0.2")));
    assert!(c.contains(ip("::ffff:127.0.0.2")));
    assert!(!c.contains(ip("::ffff:127.0.0.3")));
}

#[test]
fn issue_13_bad_cidr_is_named() {
    let e = Cidrs::parse(&["10.0.0.0/33".into()]).unwrap_err();
    assert!(
        e.to_string().contains("\"10.0.0.0/33\" is not a CIDR"),
        "{e}"
    );
    assert!(Cidrs::parse(&["example.com".into()]).is_err());
}

#[test]
fn issue_13_forwarded_for_only_from_a_trusted_proxy() {
    let proxies = cidrs(&["10.0.0.0/8"]);
    // An untrusted peer's header is ignored: the client is the peer.
    let h = forwarded(&["203.0.113.7"]);
    assert_eq!(
        client_addr(ip("198.51.100.1"), &h, &proxies),
        Ok(ip("198.51.100.1"))
    );
    // A trusted peer: the rightmost hop that is not a trusted proxy; the
    // client-written hops to its left do not count.
    let h = forwarded(&["1.1.1.1, 203.0.113.7, 10.0.0.9"]);
    assert_eq!(
        client_addr(ip("10.0.0.1"), &h, &proxies),
        Ok(ip("203.0.113.7"))
    );
    // Several headers are one list.
    let h = forwarded(&["1.1.1.1", "203.0.113.7", "10.0.0.9"]);
    assert_eq!(
        client_addr(ip("10.0.0.1"), &h, &proxies),
        Ok(ip("203.0.113.7"))
    );
    // No header: the proxy itself; only proxies: the leftmost.
    assert_eq!(
        client_addr(ip("10.0.0.1"), &HeaderMap::new(), &proxies),
        Ok(ip("10.0.0.1"))
    );
    let h = forwarded(&["10.0.0.7, 10.0.0.9"]);
    assert_eq!(
        client_addr(ip("10.0.0.1"), &h, &proxies),
        Ok(ip("10.0.0.7"))
    );
    // A mapped peer is a trusted proxy too.
    let h = forwarded(&["203.0.113.7"]);
    assert_eq!(
        client_addr(ip("::ffff:10.0.0.1"), &h, &proxies),
        Ok(ip("203.0.113.7"))
    );
}

#[test]
fn issue_13_malformed_forwarded_for_from_a_proxy_is_refused() {
    let proxies = cidrs(&["10.0.0.0/8"]);
    for bad in [
        "203.0.113.7:443",
        "unknown",
        "203.0.113.7,,",
        "",
        "1.2.3.4 5.6.7.8",
    ] {
        let h = forwarded(&[bad]);
        assert_eq!(
            client_addr(ip("10.0.0.1"), &h, &proxies),
            Err(Refusal::BadForwardedFor),
            "{bad:?}"
        );
    }
}

#[test]
fn issue_13_filter_counts_by_reason() {
    let f = SourceFilter::new("/hook", cidrs(&["127.0.0.2"]), cidrs(&["127.0.0.5"]));
    let peer = |s: &str| PeerAddr(SocketAddr::new(ip(s), 40000));
    assert!(f
        .check(Some(&peer("127.0.0.2")), &HeaderMap::new())
        .is_none());
    let res = f
        .check(Some(&peer("127.0.0.3")), &HeaderMap::new())
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = f
        .check(Some(&peer("127.0.0.5")), &forwarded(&["nope"]))
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(f
        .check(Some(&peer("127.0.0.5")), &forwarded(&["127.0.0.2"]))
        .is_none());
    // No peer known: refused, never waved through.
    assert!(f.check(None, &HeaderMap::new()).is_some());
    assert_eq!(
        f.snapshot(),
        serde_json::json!({"notAllowed": 2, "badForwardedFor": 1})
    );
}

#[test]
fn issue_13_log_budget_is_obeyed_and_reopens() {
    let budget = LogBudget::new(3, Duration::from_secs(60));
    let t0 = Instant::now();
    let admitted: Vec<_> = (0..1000).filter_map(|_| budget.admit(t0)).collect();
    assert_eq!(admitted, vec![0, 0, 0], "3 lines per window, then silence");
    // Next window: the first line reports what was left out.
    let t1 = t0 + Duration::from_secs(60);
    assert_eq!(budget.admit(t1), Some(997));
    assert_eq!(budget.admit(t1), Some(0));
}
