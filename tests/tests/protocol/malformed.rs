//! Malformed input: dropped, counted, nothing sent, never a panic.

use crate::harness::*;

#[test]
fn malformed_bad_magic() {
    let mut b = server(h_echo);
    let mut f = b.req(8, b"abc").remove(0);
    f[55] = (f[55] & 0x0F) | (5 << 4);
    b.assert_dropped(f, DropReason::BadMagic);
    // On an SM frame too.
    let mut f = sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, 1, 1, 0, PEER, ME));
    f[55] &= 0x0F;
    b.assert_dropped(f, DropReason::BadMagic);
}

#[test]
fn malformed_unknown_session() {
    let mut b = server(h_echo);
    // A free session number, the first number past the table, and the largest non-SM number.
    for dest in [b.local + 1, 8, 0xFFFE] {
        let f = b.raw(ErpcHdr::new(RT, 3, dest, PktType::Req, 0, 8), b"abc");
        b.assert_dropped(f, DropReason::UnknownSession);
    }
    // A client session that is still connecting.
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    assert_eq!(b.sent().len(), 1);
    let f = b.raw(ErpcHdr::new(RT, 3, s.0, PktType::Resp, 0, 8), b"abc");
    b.assert_dropped(f, DropReason::UnknownSession);
}

#[test]
fn malformed_truncated() {
    let mut b = server(h_echo);
    let full = b.req(8, b"abcdef").remove(0);
    for len in [0, 1, 14, 41, 42, 55] {
        b.assert_dropped(full[..len].to_vec(), DropReason::Truncated);
    }
    // Header complete, data shorter than msg_size announces.
    b.assert_dropped(full[..PKT_HDR_LEN + 3].to_vec(), DropReason::Truncated);
    b.assert_dropped(full[..PKT_HDR_LEN].to_vec(), DropReason::Truncated);
    // For a non-last packet of a large request: a full packet's data is expected.
    let big = b.req(9, &pattern(1, 3000)).remove(0);
    b.assert_dropped(big[..big.len() - 1].to_vec(), DropReason::Truncated);
    // Client side: a RESP 1 shorter than its share.
    let mut c = client();
    c.request(b"get", 4000, 1);
    c.step();
    c.sent();
    let r = c.resp(8, 0, &pattern(RESP_SEED, 3000));
    assert_eq!(c.deliver([r[0].clone()]).len(), 3);
    c.assert_dropped(r[1][..r[1].len() - 1].to_vec(), DropReason::Truncated);
    // The intact frames still complete it.
    assert!(c.deliver(r[1..].to_vec()).is_empty());
    assert_eq!(c.ctx().done.len(), 1);
    assert_eq!(c.ctx().done[0].result, Ok(3000));
}

#[test]
fn malformed_msg_size_beyond_max() {
    let mut b = server(h_echo);
    let max = 8 << 20;
    assert_eq!(b.rpc.max_msg_size(), max);
    let f = b.raw(ErpcHdr::new(RT, max as u32 + 1, b.local, PktType::Req, 0, 8), &[0; DPP]);
    b.assert_dropped(f, DropReason::BadMsgSize);
    let f = b.raw(ErpcHdr::new(RT, 0xFF_FFFF, b.local, PktType::Req, 0, 8), &[0; DPP]);
    b.assert_dropped(f, DropReason::BadMsgSize);
    // Client side.
    let mut c = client();
    c.request(b"get", 100, 1);
    c.step();
    c.sent();
    let f = c.raw(ErpcHdr::new(RT, max as u32 + 1, c.local, PktType::Resp, 0, 8), &[0; DPP]);
    c.assert_dropped(f, DropReason::BadMsgSize);
    assert!(c.ctx().done.is_empty());
}

#[test]
fn malformed_wrong_type_for_role() {
    let mut b = server(h_echo);
    for ty in [PktType::Resp, PktType::ExplCr] {
        let f = b.raw(ErpcHdr::new(RT, 3, b.local, ty, 0, 8), b"abc");
        b.assert_dropped(f, DropReason::WrongType);
    }
    let mut c = client();
    c.request(b"get", 100, 1);
    c.step();
    c.sent();
    for ty in [PktType::Req, PktType::Rfr] {
        let f = c.raw(ErpcHdr::new(RT, 3, c.local, ty, 0, 8), b"abc");
        c.assert_dropped(f, DropReason::WrongType);
    }
    assert!(c.ctx().done.is_empty());
}

#[test]
fn malformed_wrong_source() {
    let mut b = server(h_echo);
    let h = ErpcHdr::new(RT, 3, b.local, PktType::Req, 0, b.base + 8);
    let other_ip = EndpointAddr { ipv4: [10, 0, 0, 9], ..PEER };
    let other_port = EndpointAddr { udp_port: PEER.udp_port + 1, ..PEER };
    b.assert_dropped(frame(&other_ip, &ME, h, b"abc"), DropReason::WrongSource);
    b.assert_dropped(frame(&other_port, &ME, h, b"abc"), DropReason::WrongSource);
    assert_eq!(b.rpc.session_stats(SessionId(b.local)).unwrap().drops, 2);
    // The genuine peer is still served.
    assert_eq!(b.deliver([frame(&PEER, &ME, h, b"abc")]).len(), 1);
}

#[test]
fn malformed_not_udp() {
    let mut b = server(h_echo);
    let f = b.req(8, b"abc").remove(0);
    let mut ipv6 = f.clone();
    ipv6[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    b.assert_dropped(ipv6, DropReason::NotUdp);
    let mut arp = f.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    b.assert_dropped(arp, DropReason::NotUdp);
    let mut tcp = f.clone();
    tcp[23] = 6;
    b.assert_dropped(tcp, DropReason::NotUdp);
    assert_eq!(b.ctx().handler_calls, 0);
}

#[test]
fn malformed_sm_frames() {
    let mut b = server(h_echo);
    let active = b.rpc.num_active_sessions();
    let body = sm_body(0, 99, 3, 0, PEER, ME);
    for size in [0u32, 39, 41, 968] {
        let h = ErpcHdr::new(SmPktType::ConnectReq as u8, size, SM_SESSION_NUM, PktType::Req, 0, 0);
        b.assert_dropped(frame(&PEER, &ME, h, body.as_bytes()), DropReason::BadSm);
    }
    // Body cut short.
    let f = sm_frame(&PEER, &ME, SmPktType::ConnectReq, &body);
    b.assert_dropped(f[..SM_FRAME_LEN - 1].to_vec(), DropReason::BadSm);
    // Unknown SM type.
    for t in [0u8, 7, 255] {
        let h = ErpcHdr::new(t, 40, SM_SESSION_NUM, PktType::Req, 0, 0);
        b.assert_dropped(frame(&PEER, &ME, h, body.as_bytes()), DropReason::BadSm);
    }
    // A ConnectReq for another endpoint (server address not ours).
    let other = EndpointAddr { udp_port: ME.udp_port + 1, ..ME };
    b.assert_dropped(
        sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, 99, 3, 0, PEER, other)),
        DropReason::BadSm,
    );
    assert_eq!(b.rpc.num_active_sessions(), active, "no session created");
}

#[test]
fn malformed_input_changes_no_state() {
    // After a storm of malformed frames aimed at a slot, a duplicate still gets the stored
    // response and the next request is still the one accepted.
    let mut b = server(h_echo);
    let resp = b.deliver(b.req(8, b"abc"));
    let good = b.req(16, b"next").remove(0);
    let mut bad = Vec::new();
    for len in [0, 30, 55, 57] {
        bad.push(good[..len].to_vec());
    }
    let mut m = good.clone();
    m[55] = 0;
    bad.push(m);
    let mut m = good.clone();
    m[26] ^= 1;
    bad.push(m);
    bad.push(b.raw(ErpcHdr::new(RT, 4, b.local, PktType::Resp, 0, 16), b"next"));
    bad.push(b.raw(ErpcHdr::new(RT, 9 << 20, b.local, PktType::Req, 0, 16), b"next"));
    let n = bad.len() as u64;
    assert!(b.deliver(bad).is_empty());
    assert_eq!(b.rpc.stats().drops.total(), n);
    assert_eq!(b.deliver(b.req(8, b"abc")), resp);
    let tx = b.deliver([good]);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 4, 0, 16));
    assert_eq!(b.ctx().handler_calls, 2);
}
