#!/usr/bin/env python3
"""Edits a checkout of erpc-io/eRPC (de83dab3) so that its DPDK transport runs on DPDK 22.11's
`net_af_packet` over a veth, as `compare` needs. Usage: patch.py ERPC_DIR (idempotent).

As shipped, the original runs only on Mellanox NICs: it asserts the driver is mlx4/mlx5, its EAL
arguments are fixed (no `--vdev`, no `--file-prefix` for two processes on one host), it asks for
16 queues with Toeplitz RSS (af_packet has neither), and it uses the ethdev macro names DPDK
21.11 removed. The edits, and nothing else:
  * EAL: the original's arguments, then the whitespace-separated words of $ERPC_EAL_ARGS;
  * `net_af_packet` accepted, its RSS table taken as one entry;
  * one queue per port (`kMaxQueuesPerPort` 1), configured without RSS or loopback mode;
  * the old macro names defined as the new ones.
The protocol, the datapath, congestion control and every constant are left as they are."""
import sys
root = sys.argv[1]

def edit(path, old, new, count=1):
    p = f"{root}/{path}"
    s = open(p).read()
    if new in s:
        return
    assert s.count(old) == 1, (path, old)
    s = s.replace(old, new, count)
    open(p, "w").write(s)

# EAL arguments: keep the original's, then append whitespace-separated ERPC_EAL_ARGS.
edit("src/transport_impl/dpdk/dpdk_transport.cc",
     """          "--log-level",   (ERPC_LOG_LEVEL >= ERPC_LOG_LEVEL_INFO) ? "8" : "0",
          nullptr};
      // clang-format on

      const int rte_argc =
          static_cast<int>(sizeof(rte_argv) / sizeof(rte_argv[0])) - 1;
      int ret = rte_eal_init(rte_argc, const_cast<char **>(rte_argv));""",
     """          "--log-level",   (ERPC_LOG_LEVEL >= ERPC_LOG_LEVEL_INFO) ? "8" : "0",
          nullptr};
      // clang-format on
      std::vector<char *> eal_args;
      for (const char **a = rte_argv; *a != nullptr; a++) eal_args.push_back(const_cast<char *>(*a));
      static std::string extra = getenv("ERPC_EAL_ARGS") ? getenv("ERPC_EAL_ARGS") : "";
      static std::vector<std::string> extra_words;
      { std::stringstream ss(extra); std::string w; while (ss >> w) extra_words.push_back(w); }
      for (auto &w : extra_words) eal_args.push_back(&w[0]);
      eal_args.push_back(nullptr);
      const int rte_argc = static_cast<int>(eal_args.size()) - 1;
      int ret = rte_eal_init(rte_argc, eal_args.data());""")
edit("src/transport_impl/dpdk/dpdk_transport.cc",
     """drv_name == "mlx5_pci",""",
     """drv_name == "mlx5_pci" or drv_name == "net_af_packet",""")
edit("src/transport_impl/dpdk/dpdk_transport.cc",
     """  if (std::string(dev_info.driver_name) == "net_mlx4") {""",
     """  if (drv_name == "net_af_packet") {
    resolve_.reta_size_ = 1;  // one queue, no RSS
  } else if (std::string(dev_info.driver_name) == "net_mlx4") {""")
edit("src/transport_impl/dpdk/dpdk_transport.cc", "#include \"dpdk_transport.h\"",
     "#include \"dpdk_transport.h\"\n#include <sstream>\n#include <vector>")
edit("src/transport_impl/dpdk/dpdk_transport.h",
     "static constexpr size_t kMaxQueuesPerPort = kIsWindows ? 1 : 16;",
     "static constexpr size_t kMaxQueuesPerPort = 1;")
edit("src/transport_impl/dpdk/dpdk_init.cc",
     "  if (!kIsWindows) {\n    eth_conf.rxmode.mq_mode = ETH_MQ_RX_RSS;",
     "  if (false) {\n    eth_conf.rxmode.mq_mode = ETH_MQ_RX_RSS;")
# DPDK 22.11 dropped the pre-21.11 names the original uses.
edit("src/transport_impl/dpdk/dpdk_transport.h", "#pragma once\n",
     "#pragma once\n"
     "#define DEV_TX_OFFLOAD_MULTI_SEGS RTE_ETH_TX_OFFLOAD_MULTI_SEGS\n"
     "#define ETH_LINK_UP RTE_ETH_LINK_UP\n#define ETH_MQ_RX_NONE RTE_ETH_MQ_RX_NONE\n"
     "#define ETH_MQ_RX_RSS RTE_ETH_MQ_RX_RSS\n#define ETH_MQ_TX_NONE RTE_ETH_MQ_TX_NONE\n"
     "#define ETH_RSS_UDP RTE_ETH_RSS_UDP\n#define ETH_SPEED_NUM_NONE RTE_ETH_SPEED_NUM_NONE\n")
