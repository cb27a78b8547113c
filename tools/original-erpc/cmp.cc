// Side-by-side benchmark for the original eRPC (written for erpc-rs's BENCHMARKS.md):
// a server that answers every request with a response of --resp_size bytes, and a client
// that keeps --window requests of --req_size bytes outstanding on one session for
// --seconds after --warmup_ms, then prints one line: p50/p99/p99.9 in us (with --window 1
// only) and the rate.
#include <gflags/gflags.h>
#include <signal.h>
#include <cstdio>
#include <vector>
#include "HdrHistogram_c/src/hdr_histogram.h"
#include "rpc.h"

DEFINE_bool(server, false, "run the server");
DEFINE_string(local_uri, "", "this process's host:udp_port for session management");
DEFINE_string(server_uri, "", "client: the server's host:udp_port");
DEFINE_uint64(window, 1, "client: outstanding requests");
DEFINE_uint64(req_size, 32, "request bytes");
DEFINE_uint64(resp_size, 32, "response bytes");
DEFINE_double(seconds, 3, "client: measured seconds");
DEFINE_uint64(warmup_ms, 500, "client: warm-up before measuring");

static constexpr uint8_t kReqType = 2;
static volatile sig_atomic_t stop = 0;
static erpc::Rpc<erpc::CTransport> *rpc;

static void req_handler(erpc::ReqHandle *h, void *) {
  auto &resp = h->pre_resp_msgbuf_;
  rpc->resize_msg_buffer(&resp, FLAGS_resp_size);
  rpc->enqueue_response(h, &resp);
}

struct Slot {
  erpc::MsgBuffer req, resp;
  size_t start_tsc;
};
static std::vector<Slot> slots;
static int session;
static hdr_histogram *hist;
static size_t completed;
static double freq_ghz;

static void cont(void *, void *tag);
static void send(size_t i) {
  if (FLAGS_window == 1) slots[i].start_tsc = erpc::rdtsc();
  rpc->enqueue_request(session, kReqType, &slots[i].req, &slots[i].resp, cont,
                       reinterpret_cast<void *>(i));
}
static void cont(void *, void *tag) {
  size_t i = reinterpret_cast<size_t>(tag);
  if (FLAGS_window == 1) {  // latency; a rate run reads no clock per RPC (as ours does not)
    double ns = static_cast<double>(erpc::rdtsc() - slots[i].start_tsc) / freq_ghz;
    hdr_record_value(hist, static_cast<int64_t>(ns));
  }
  completed++;
  send(i);
}
static void sm_handler(int, erpc::SmEventType, erpc::SmErrType, void *) {}

int main(int argc, char **argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  signal(SIGINT, [](int) { stop = 1; });
  signal(SIGTERM, [](int) { stop = 1; });
  erpc::Nexus nexus(FLAGS_local_uri, 0, 0);
  if (FLAGS_server) {
    nexus.register_req_func(kReqType, req_handler);
    rpc = new erpc::Rpc<erpc::CTransport>(&nexus, nullptr, 0, sm_handler);
    fprintf(stderr, "serving on %s\n", FLAGS_local_uri.c_str());
    while (!stop) rpc->run_event_loop(100);
    return 0;
  }
  rpc = new erpc::Rpc<erpc::CTransport>(&nexus, nullptr, 0, sm_handler);
  freq_ghz = rpc->get_freq_ghz();
  session = rpc->create_session(FLAGS_server_uri, 0);
  erpc::rt_assert(session >= 0, "create_session");
  while (!rpc->is_connected(session) && !stop) rpc->run_event_loop_once();
  hdr_init(1, 1000 * 1000 * 1000, 3, &hist);
  slots.resize(FLAGS_window);
  for (size_t i = 0; i < FLAGS_window; i++) {
    slots[i].req = rpc->alloc_msg_buffer_or_die(FLAGS_req_size);
    slots[i].resp = rpc->alloc_msg_buffer_or_die(FLAGS_resp_size);
    memset(slots[i].req.buf_, 0xab, FLAGS_req_size);
    send(i);
  }
  const size_t warm_end = erpc::rdtsc() + static_cast<size_t>(FLAGS_warmup_ms * 1e6 * freq_ghz);
  while (erpc::rdtsc() < warm_end) rpc->run_event_loop_once();
  hdr_reset(hist);
  completed = 0;
  const size_t t0 = erpc::rdtsc();
  const size_t end = t0 + static_cast<size_t>(FLAGS_seconds * 1e9 * freq_ghz);
  size_t now = t0;
  while (now < end && !stop) {
    for (int k = 0; k < 64; k++) rpc->run_event_loop_once();
    now = erpc::rdtsc();
  }
  const double secs = static_cast<double>(now - t0) / (freq_ghz * 1e9);
  printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, \"mrps\": %.4f, \"rpcs\": %zu, \"retransmissions\": %zu}\n",
         hdr_value_at_percentile(hist, 50) / 1e3, hdr_value_at_percentile(hist, 99) / 1e3,
         hdr_value_at_percentile(hist, 99.9) / 1e3, static_cast<double>(completed) / secs / 1e6,
         completed, rpc->get_num_re_tx(session));
  return 0;
}
