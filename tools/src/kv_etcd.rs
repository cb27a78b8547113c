//! `erpc kv etcd-bench`: the replicated store users already run — etcd — under the load of
//! `erpc kv bench` (same clients, key and value sizes, PUT/GET mix), printed with the same keys.
//!
//! The client speaks etcd's v3 gRPC API (`etcdserverpb.KV`, `Put` and `Range`) with stubs made
//! by tonic-build's manual builder (`build.rs`) and hand-written prost messages holding the fields
//! used (prost skips the others). One HTTP/2 connection to the member given first (start with
//! the leader: followers forward to it), `--clients` tasks on a one-thread tokio runtime, each
//! with one operation outstanding. GETs are etcd's default linearizable reads (`serializable`
//! false), like the store's read-index GETs.

use crate::kv::{KvReport, LoadArgs};
use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use prost::bytes::Bytes;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::cell::RefCell;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[allow(clippy::all, missing_docs, unreachable_pub)]
mod stubs {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.KV.rs"));
}
use stubs::k_v_client::KVClient as KvClient;

/// `PutRequest { bytes key = 1; bytes value = 2; ... }` (etcd's rpc.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `PutResponse { ResponseHeader header = 1; ... }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2; int64 revision = 3; uint64 raft_term = 4; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `RangeRequest { bytes key = 1; ... bool serializable = 7; ... }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

/// `RangeResponse { ResponseHeader header = 1; repeated KeyValue kvs = 2; ... }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

/// `KeyValue { bytes key = 1; ... bytes value = 5; }` (mvccpb).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
}

#[derive(clap::Args, Debug)]
pub struct EtcdBenchArgs {
    /// etcd client URLs' addresses (the leader first: the load goes to it).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<SocketAddrV4>,
    /// What the etcd members' data directories are on, for the report ("fsync": a disk;
    /// "none": tmpfs, where fsync does nothing — etcd 3.4 cannot turn it off).
    #[arg(long, default_value = "fsync")]
    durability: String,
    #[command(flatten)]
    load: LoadArgs,
}

struct Stats {
    all: Histogram<u64>,
    puts: Histogram<u64>,
    gets: Histogram<u64>,
    ops: u64,
    failed: u64,
    measuring: bool,
    last_error: Option<String>,
}

pub fn run(a: EtcdBenchArgs) -> anyhow::Result<()> {
    crate::kv::check_load(&a.load)?;
    let l = a.load.clone();
    let url = format!("http://{}", a.endpoints[0]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    let r = local.block_on(&rt, async move {
        let ch = tokio::time::timeout(
            Duration::from_secs(5),
            tonic::transport::Endpoint::new(url.clone()).with_context(|| format!("etcd endpoint {url}"))?.connect(),
        )
        .await
        .map_err(|_| {
            anyhow!("is it running, and is that its client URL?")
                .context(format!("no etcd answered at {url} within 5 s"))
        })?
        .with_context(|| format!("no etcd answered at {url}"))?;
        let hist = || Histogram::<u64>::new(3).expect("histogram");
        let st = Rc::new(RefCell::new(Stats {
            all: hist(),
            puts: hist(),
            gets: hist(),
            ops: 0,
            failed: 0,
            measuring: false,
            last_error: None,
        }));
        let value = Bytes::from(vec![b'v'; l.value_size]);
        let key_of = move |k: u64, size: usize| {
            let mut v = vec![b'k'; size];
            v[..8].copy_from_slice(&k.to_le_bytes());
            Bytes::from(v)
        };
        // One PUT first: the cluster is up.
        let mut c0 = KvClient::new(ch.clone());
        tokio::time::timeout(
            Duration::from_secs(15),
            c0.put(PutRequest { key: key_of(0, l.key_size), value: value.clone() }),
        )
        .await
        .map_err(|_| anyhow!("etcd did not answer a PUT within 15 s: has the cluster a leader?"))?
        .map_err(|e| anyhow!("etcd refused a PUT: {}", e.message()))?;
        let warm = Duration::from_millis(500);
        let dur = Duration::from_secs_f64(l.duration);
        let t0 = Instant::now();
        let stop = t0 + warm + dur;
        let mut tasks = Vec::new();
        for c in 0..l.clients {
            let (st, ch, value, l) = (st.clone(), ch.clone(), value.clone(), l.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut kv = KvClient::new(ch);
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(erpc_dataplane::RpcConfig::random_seed() ^ c as u64);
                while Instant::now() < stop {
                    let key = key_of(rng.next_u64() % l.keys, l.key_size);
                    let get = rng.next_u64() % 100 < l.get_pct;
                    let t = Instant::now();
                    let r = if get {
                        kv.range(RangeRequest { key, serializable: false }).await.map(|_| ())
                    } else {
                        kv.put(PutRequest { key, value: value.clone() }).await.map(|_| ())
                    };
                    let ns = (t.elapsed().as_nanos() as u64).max(1);
                    let mut s = st.borrow_mut();
                    if !s.measuring {
                        continue;
                    }
                    match r {
                        Ok(()) => {
                            let _ = s.all.record(ns);
                            let _ = if get { s.gets.record(ns) } else { s.puts.record(ns) };
                            s.ops += 1;
                        }
                        Err(e) => {
                            s.failed += 1;
                            s.last_error = Some(e.message().to_string());
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(warm).await;
        st.borrow_mut().measuring = true;
        let m0 = Instant::now();
        for t in tasks {
            let _ = t.await;
        }
        let secs = m0.elapsed().as_secs_f64().min(l.duration);
        let s = Rc::try_unwrap(st).map_err(|_| anyhow!("the load's tasks are still running"))?.into_inner();
        if s.ops == 0 {
            bail!("etcd completed no operation: {}", s.last_error.unwrap_or_default());
        }
        Ok::<_, anyhow::Error>((s, secs))
    })?;
    let (s, secs) = r;
    let rep = KvReport::peer(
        "etcd-grpc-tcp",
        "etcd 3-member cluster",
        &a.load,
        a.durability == "fsync",
        secs,
        s.ops,
        s.failed,
        [s.all, s.puts, s.gets],
    );
    crate::kv::emit(&rep, a.load.json);
    Ok(())
}
