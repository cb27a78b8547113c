//! A cable between two models, with loss injection.
//!
//! Frames a device sends are queued on the link while the sender's lock is held (so they leave
//! in the order the device sent them) and delivered into the peer after the sender's lock is
//! released, by the thread that rang the doorbell. One thread at a time drains each direction,
//! so frames also arrive in order; no thread ever holds two devices' locks, so two models
//! sending to each other from two threads cannot deadlock.

use super::Device;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Which way a frame travels: from the first model given to
/// [`Mlx5Model::connect`](super::Mlx5Model::connect) to the second, or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    AToB,
    BToA,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::AToB => 0,
            Direction::BToA => 1,
        }
    }

    fn from_index(i: usize) -> Direction {
        if i == 0 {
            Direction::AToB
        } else {
            Direction::BToA
        }
    }
}

/// Frames carried and dropped each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub carried: [u64; 2],
    pub dropped: [u64; 2],
}

/// A frame the tap saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tapped {
    pub direction: Direction,
    pub frame: Vec<u8>,
    /// Dropped by loss injection instead of carried.
    pub dropped: bool,
}

/// A predicate on frames: true drops the frame.
pub type FrameFilter = Box<dyn Fn(&[u8]) -> bool + Send>;

#[derive(Default)]
struct Way {
    queue: VecDeque<Vec<u8>>,
    draining: bool,
    drop_next: u32,
}

#[derive(Default)]
struct State {
    ways: [Way; 2],
    stats: LinkStats,
    /// Frames to drop next, either way.
    drop_next: u32,
    /// (probability, splitmix64 state).
    loss: Option<(f64, u64)>,
    filter: Option<FrameFilter>,
    tap: Option<Vec<Tapped>>,
}

pub(crate) struct Inner {
    ends: [Weak<Mutex<Device>>; 2],
    state: Mutex<State>,
}

/// The cable between two models (clones share it).
#[derive(Clone)]
pub struct Link(pub(crate) Arc<Inner>);

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Link {
    pub(crate) fn new(a: &Arc<Mutex<Device>>, b: &Arc<Mutex<Device>>) -> Link {
        Link(Arc::new(Inner { ends: [Arc::downgrade(a), Arc::downgrade(b)], state: Mutex::new(State::default()) }))
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the next `n` frames, whichever way they go.
    pub fn drop_next(&self, n: u32) {
        self.st().drop_next += n;
    }

    /// Drops the next `n` frames going `dir`.
    pub fn drop_next_way(&self, dir: Direction, n: u32) {
        self.st().ways[dir.index()].drop_next += n;
    }

    /// Drops each frame with `probability`, from a deterministic generator seeded with `seed`;
    /// 0 turns loss off.
    pub fn set_loss(&self, probability: f64, seed: u64) {
        self.st().loss = (probability > 0.0).then_some((probability, seed));
    }

    /// Drops every frame `f` returns true for (`None` removes the filter).
    pub fn drop_matching(&self, f: Option<FrameFilter>) {
        self.st().filter = f;
    }

    /// Starts (or stops, discarding what it saw) recording every frame offered to the link.
    pub fn set_tap(&self, on: bool) {
        self.st().tap = on.then(Vec::new);
    }

    /// What the tap recorded since the last call.
    pub fn take_tapped(&self) -> Vec<Tapped> {
        self.st().tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn stats(&self) -> LinkStats {
        self.st().stats
    }

    /// Queues a frame from side `from` (called with the sender's device lock held; only the
    /// link's own lock is taken).
    pub(crate) fn push(&self, from: usize, frame: Vec<u8>) {
        let mut st = self.st();
        let st = &mut *st;
        let drop = if st.ways[from].drop_next > 0 {
            st.ways[from].drop_next -= 1;
            true
        } else if st.drop_next > 0 {
            st.drop_next -= 1;
            true
        } else if st.filter.as_ref().is_some_and(|f| f(&frame)) {
            true
        } else if let Some((p, seed)) = &mut st.loss {
            ((splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64) < *p
        } else {
            false
        };
        if let Some(tap) = &mut st.tap {
            tap.push(Tapped { direction: Direction::from_index(from), frame: frame.clone(), dropped: drop });
        }
        if drop {
            st.stats.dropped[from] += 1;
        } else {
            st.stats.carried[from] += 1;
            st.ways[from].queue.push_back(frame);
        }
    }

    /// Delivers what side `from` queued into the other side (called without any device lock).
    pub(crate) fn drain(&self, from: usize) {
        {
            let mut st = self.st();
            if st.ways[from].draining || st.ways[from].queue.is_empty() {
                return;
            }
            st.ways[from].draining = true;
        }
        loop {
            let frame = {
                let mut st = self.st();
                match st.ways[from].queue.pop_front() {
                    Some(f) => f,
                    None => {
                        st.ways[from].draining = false;
                        return;
                    }
                }
            };
            if let Some(dev) = self.0.ends[1 - from].upgrade() {
                dev.lock().unwrap_or_else(|p| p.into_inner()).receive(&frame);
            }
        }
    }
}
