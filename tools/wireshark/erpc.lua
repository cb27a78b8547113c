-- Wireshark dissector for eRPC over UDP: this project's packets (the Rust eRPC), whose header is
-- bit-exact with the original eRPC's `pkthdr_t` (erpc-io/eRPC, src/pkthdr.h).
--
--   wireshark -X lua_script:tools/wireshark/erpc.lua capture.pcap
--   tshark -X lua_script:tools/wireshark/erpc.lua -r capture.pcap -V
--
-- or copy this file into the personal Lua plugins folder (`tshark -G folders` prints it; on
-- Linux ~/.local/lib/wireshark/plugins/) to have it always loaded. Captures come from
-- `erpc capture --pcap FILE` (tools/src/capture.rs).
--
-- Which UDP packets are eRPC: those on the ports of the preference "eRPC UDP ports" (default
-- 31850-31881: 31850 is the eRPC base port that `erpc capture`, `erpc bench --server` examples
-- and the Intel driver use, the simulated fabric numbers its endpoints 31850 + n), and any
-- other UDP packet that passes the heuristic below (heuristic "erpc_udp", on by default).
--
-- The header (dataplane/src/wire.rs: `ErpcHdr`, `ErpcHdr::new`, `ErpcHdr::decode`) is the first
-- 14 bytes of the UDP payload, in little-endian words:
--
--   offset  size  content
--   0       4     u32 LE word0: req_type = bits 0..7, msg_size = bits 8..31 (24 bits)
--   4       2     u16 LE dest_session_num
--   6       8     u64 LE word1: pkt_type = bits 0..1, pkt_num = bits 2..15 (14 bits),
--                 req_num = bits 16..59 (44 bits), magic = bits 60..63 (always 11, wire::MAGIC)
--
-- Because the words are little-endian, each field sits in whole bytes of its own, which is how it
-- is extracted below: req_type is byte 0; msg_size bytes 1..3; pkt_type the low 2 bits of byte 6;
-- pkt_num the high 14 bits of the u16 at bytes 6..7; req_num the low 44 bits of the 48 bits at
-- bytes 8..13; magic the high nibble of byte 13.
--
-- pkt_type (wire::PktType): 0 Req (request data), 1 RFR (request for response), 2 ExplCR
-- (explicit credit return), 3 Resp (response data). pkt_num counts the packets of one RPC: request
-- packets 0..n-1, then response packets from n-1 on (the first response packet answers the last
-- request packet); a credit return carries the number of the request packet it answers, an RFR
-- the number of the response packet it asks for. msg_size is the size of the whole message
-- (0 in credit returns and RFRs). Data follows the header.
--
-- Session management (dataplane/src/sm.rs) travels on the datapath: dest_session_num = 0xFFFF
-- (wire::SM_SESSION_NUM), req_type = the SmPktType, pkt_type Req, and the data is an SmBody of
-- 40 bytes: err u8, 3 pad bytes, client_session u16 LE, server_session u16 LE, token u64 LE,
-- then the client's and the server's AddrWire (mac[6], ipv4[4], udp_port u16 LE). The header's
-- req_num carries the connect cookie: in a ConnectRetry (the server's stateless answer to a
-- connect request without a valid cookie) and in the connect request that repeats it; in a
-- Refused, it is the number of the request the server refused (err says why).
--
-- Tested with Wireshark 4.0 (Lua 5.2, tools/tests/capture.rs). Written to run on later versions'
-- Lua 5.3/5.4 as well: only Wireshark's field extraction and plain arithmetic, no bit library
-- and no Lua 5.3 operators.

local erpc = Proto("erpc", "eRPC")

local PKT_TYPES = { [0] = "Req", [1] = "RFR", [2] = "ExplCR", [3] = "Resp" }
local SM_TYPES = {
    [1] = "ConnectReq", [2] = "ConnectResp", [3] = "DisconnectReq", [4] = "DisconnectResp",
    [5] = "Ping", [6] = "PingResp", [7] = "ConnectRetry", [8] = "Refused",
}
-- sm.rs, err_code(): 0 success, then SmError; 5 is ERR_UNKNOWN_SESSION in a ping response, 8
-- ERR_NO_HANDLER in a Refused.
local SM_ERRORS = {
    [0] = "OK", [1] = "RemoteUnreachable", [2] = "OutOfSessions", [3] = "OutOfMemory",
    [4] = "RoutingFailed", [5] = "UnknownSession", [6] = "Refused", [7] = "TooManySessionsFromClient",
    [8] = "NoHandler",
}

local HDR_LEN = 14          -- wire::ERPC_HDR_LEN
local MAGIC = 11            -- wire::MAGIC
local SM_SESSION = 0xFFFF   -- wire::SM_SESSION_NUM
local SM_BODY_LEN = 40      -- size_of::<SmBody>()

local f = {
    req_type = ProtoField.uint8("erpc.req_type", "Request type", base.DEC),
    msg_size = ProtoField.uint24("erpc.msg_size", "Message size", base.DEC),
    dest_session = ProtoField.uint16("erpc.dest_session", "Destination session", base.DEC),
    pkt_type = ProtoField.uint8("erpc.pkt_type", "Packet type", base.DEC, PKT_TYPES, 0x03),
    pkt_num = ProtoField.uint16("erpc.pkt_num", "Packet number", base.DEC, nil, 0xFFFC),
    req_num = ProtoField.uint64("erpc.req_num", "Request number", base.DEC),
    magic = ProtoField.uint8("erpc.magic", "Magic", base.DEC, nil, 0xF0),
    data = ProtoField.bytes("erpc.data", "Data"),
    data_len = ProtoField.uint32("erpc.data_len", "Data length", base.DEC),
    sm_type = ProtoField.uint8("erpc.sm.type", "Session-management type", base.DEC, SM_TYPES),
    sm_err = ProtoField.uint8("erpc.sm.err", "Error", base.DEC, SM_ERRORS),
    sm_client_session = ProtoField.uint16("erpc.sm.client_session", "Client session", base.DEC),
    sm_server_session = ProtoField.uint16("erpc.sm.server_session", "Server session", base.DEC),
    sm_token = ProtoField.uint64("erpc.sm.token", "Token", base.HEX),
    sm_client_mac = ProtoField.ether("erpc.sm.client.mac", "Client MAC"),
    sm_client_ip = ProtoField.ipv4("erpc.sm.client.ip", "Client IPv4"),
    sm_client_port = ProtoField.uint16("erpc.sm.client.port", "Client UDP port", base.DEC),
    sm_server_mac = ProtoField.ether("erpc.sm.server.mac", "Server MAC"),
    sm_server_ip = ProtoField.ipv4("erpc.sm.server.ip", "Server IPv4"),
    sm_server_port = ProtoField.uint16("erpc.sm.server.port", "Server UDP port", base.DEC),
}
erpc.fields = {
    f.req_type, f.msg_size, f.dest_session, f.pkt_type, f.pkt_num, f.req_num, f.magic, f.data,
    f.data_len, f.sm_type, f.sm_err, f.sm_client_session, f.sm_server_session, f.sm_token,
    f.sm_client_mac, f.sm_client_ip, f.sm_client_port, f.sm_server_mac, f.sm_server_ip,
    f.sm_server_port,
}

local ef_bad_magic = ProtoExpert.new("erpc.bad_magic", "Magic is not 11: not an eRPC packet",
    expert.group.MALFORMED, expert.severity.ERROR)
local ef_short = ProtoExpert.new("erpc.short", "Shorter than the 14-byte eRPC header",
    expert.group.MALFORMED, expert.severity.ERROR)
local ef_size = ProtoExpert.new("erpc.size_mismatch", "Data length does not fit the message size",
    expert.group.MALFORMED, expert.severity.WARN)
erpc.experts = { ef_bad_magic, ef_short, ef_size }

local DEFAULT_PORTS = "31850-31881"
erpc.prefs.udp_ports = Pref.range("eRPC UDP ports", DEFAULT_PORTS,
    "UDP ports decoded as eRPC (others are tried with the heuristic)", 65535)

-- The header fields of the UDP payload `tvb` (at least HDR_LEN bytes), as Lua numbers (exact:
-- the widest, req_num, has 44 bits) and, for req_num, the UInt64 Wireshark shows.
local function header(tvb)
    local h = {}
    h.req_type = tvb(0, 1):uint()
    h.msg_size = tvb(1, 3):le_uint()
    h.dest_session = tvb(4, 2):le_uint()
    local b6 = tvb(6, 2):le_uint()
    h.pkt_type = b6 % 4
    h.pkt_num = math.floor(b6 / 4)
    -- req_num: bits 0..43 of the 48-bit little-endian value at bytes 8..13.
    local lo = tvb(8, 4):le_uint()
    local hi = tvb(12, 2):le_uint() % 4096
    h.req_num = hi * 4294967296 + lo
    h.req_num64 = UInt64.new(lo, hi)
    h.magic = math.floor(tvb(13, 1):uint() / 16)
    return h
end

-- Whether the packet's lengths agree with its header (also the heuristic's test). Data packets:
-- every packet of a message but the last carries the same amount of data and the last no more,
-- so packet k of a request is preceded by k packets at least as long as itself.
local MAX_MSG_SIZE = 8 * 1024 * 1024   -- config::MAX_MSG_SIZE
local function consistent(h, data_len)
    if h.dest_session == SM_SESSION then
        return h.pkt_type == 0 and SM_TYPES[h.req_type] ~= nil and data_len == SM_BODY_LEN
            and h.msg_size == SM_BODY_LEN
    end
    if h.pkt_type == 1 or h.pkt_type == 2 then
        return data_len == 0 and h.msg_size == 0   -- RFR, credit return: header only
    end
    if h.msg_size > MAX_MSG_SIZE or data_len > h.msg_size or (data_len == 0 and h.msg_size ~= 0) then
        return false
    end
    -- Response packets are numbered on from the request's, so only requests are checked.
    return h.pkt_type ~= 0 or (h.pkt_num + 1) * data_len <= h.msg_size
end

-- An AddrWire (sm.rs: mac[6], ipv4[4], udp_port u16 LE) at byte `off` of the UDP payload.
local function add_addr(tree, tvb, off, label, mac, ip, port)
    local t = tree:add(erpc, tvb(off, 12), label)
    t:add(mac, tvb(off, 6))
    t:add(ip, tvb(off + 6, 4))
    t:add_le(port, tvb(off + 10, 2))
end

local function dissect(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "eRPC"
    local root = tree:add(erpc, tvb(0, math.min(len, HDR_LEN)), "eRPC")
    if len < HDR_LEN then
        root:add_proto_expert_info(ef_short)
        pinfo.cols.info = "eRPC (truncated header)"
        return len
    end
    local h = header(tvb)
    local data_len = len - HDR_LEN
    root:add(f.req_type, tvb(0, 1))
    root:add_le(f.msg_size, tvb(1, 3))
    root:add_le(f.dest_session, tvb(4, 2))
    root:add(f.pkt_type, tvb(6, 1))
    root:add_le(f.pkt_num, tvb(6, 2))
    root:add_le(f.req_num, tvb(8, 6), h.req_num64)
    local m = root:add(f.magic, tvb(13, 1))
    if h.magic ~= MAGIC then
        m:add_proto_expert_info(ef_bad_magic)
    end
    if not consistent(h, data_len) then
        root:add_proto_expert_info(ef_size)
    end
    local name = PKT_TYPES[h.pkt_type]
    if h.dest_session == SM_SESSION and data_len >= SM_BODY_LEN then
        local sm = SM_TYPES[h.req_type] or ("SM type " .. h.req_type)
        root:append_text(", session management: " .. sm)
        local o = HDR_LEN   -- the SmBody
        local t = root:add(erpc, tvb(o, SM_BODY_LEN), "Session management: " .. sm)
        t:add(f.sm_type, tvb(0, 1))
        t:add(f.sm_err, tvb(o, 1))
        t:add_le(f.sm_client_session, tvb(o + 4, 2))
        t:add_le(f.sm_server_session, tvb(o + 6, 2))
        t:add_le(f.sm_token, tvb(o + 8, 8))
        add_addr(t, tvb, o + 16, "Client address", f.sm_client_mac, f.sm_client_ip, f.sm_client_port)
        add_addr(t, tvb, o + 28, "Server address", f.sm_server_mac, f.sm_server_ip, f.sm_server_port)
        local err = tvb(o, 1):uint()
        pinfo.cols.info = string.format("%s client_session=%d server_session=%d%s", sm,
            tvb(o + 4, 2):le_uint(), tvb(o + 6, 2):le_uint(),
            err ~= 0 and (" err=" .. (SM_ERRORS[err] or err)) or "")
    else
        root:append_text(string.format(", %s, session %d, req %s, pkt %d", name, h.dest_session,
            tostring(h.req_num64), h.pkt_num))
        pinfo.cols.info = string.format("%-6s sess=%d req=%s pkt=%d type=%d size=%d", name,
            h.dest_session, tostring(h.req_num64), h.pkt_num, h.req_type, h.msg_size)
    end
    root:add(f.data_len, data_len):set_generated()
    if data_len > 0 then
        root:add(f.data, tvb(HDR_LEN, data_len))
    end
    return len
end

function erpc.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree)
end

-- Heuristic for UDP ports outside the preference: 14+ bytes, magic 11, and lengths that agree
-- with the header (see `consistent`). Tried only when no dissector registered on either port
-- took the packet (unless udp.try_heuristic_first is set); as with any 4-bit magic it can take a
-- stray UDP packet for eRPC: turn it off in Analyze > Enabled Protocols (erpc_udp) or with
-- `--disable-heuristic erpc_udp`.
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < HDR_LEN then
        return false
    end
    local h = header(tvb)
    if h.magic ~= MAGIC or not consistent(h, tvb:len() - HDR_LEN) then
        return false
    end
    dissect(tvb, pinfo, tree)
    return true
end
erpc:register_heuristic("udp", heuristic)

local udp_table = DissectorTable.get("udp.port")
local registered = ""

local function register_ports()
    if registered ~= "" then
        udp_table:remove(registered, erpc)
    end
    registered = erpc.prefs.udp_ports
    if registered ~= "" then
        udp_table:add(registered, erpc)
    end
end

function erpc.prefs_changed()
    if erpc.prefs.udp_ports ~= registered then
        register_ports()
    end
end

register_ports()
udp_table:add_for_decode_as(erpc)
