//! What one thread of a kernel executes, counted while the kernel is written.
//!
//! Every emitter loop has a static trip count (tiles, windows, grid-stride passes over
//! static shapes), so the writer weighs each instruction by the product of the trip
//! counts around it and sums a thread's dynamic instruction mix without running
//! anything. The cost model (`calib_cost::Census::of`) prices the mix.
//!
//! Latency is counted as *load rounds*: the global loads of one loop iteration are
//! issued together and waited for once, so a thread that evaluates a long prologue for
//! each of four tile elements in turn waits four times per tile.

use calib_cost::InstructionMix;

/// What one instruction added to the mix: its opcode's count and the independent
/// share.
#[derive(Clone, Debug)]
pub(crate) struct Share {
    opcode: String,
    weight: f64,
    independent: f64,
}

/// The counter inside a [`super::Builder`]: the current weight (the product of the trip
/// counts of the loops being written) and whether the current loop iteration has
/// loaded from global memory yet.
#[derive(Debug)]
pub(crate) struct Counter {
    mix: InstructionMix,
    weights: Vec<f64>,
    loaded: bool,
    /// Bank-conflict ways of the next shared access, set by the emitter that knows its
    /// address pattern.
    pub next_shared_ways: Option<f64>,
    /// Sectors the next global access touches beyond the fewest its bytes fill (a
    /// warp's), set by the emitter that evaluated its address across lanes.
    pub next_global_excess: Option<f64>,
    /// Whether instructions now being written are independent of each other.
    pub independent: bool,
    /// How many independent chains the instructions now being written interleave (a
    /// tile's elements loaded together): a warp waits for each chain's results only
    /// once per chain, so all but one share of the dependent latency overlaps.
    pub chains: usize,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            mix: InstructionMix::default(),
            weights: vec![1.0],
            loaded: false,
            next_shared_ways: None,
            next_global_excess: None,
            independent: false,
            chains: 1,
        }
    }
}

impl Counter {
    fn weight(&self) -> f64 {
        *self
            .weights
            .last()
            .expect("the outermost weight is never popped")
    }

    /// Closes the current stretch of straight-line code: one load round if it loaded.
    fn close_stretch(&mut self) {
        if std::mem::replace(&mut self.loaded, false) {
            self.mix.load_rounds += self.weight();
        }
    }

    /// Enters a loop body that runs `trips` times per run of the enclosing code (or a
    /// branch taken with that probability).
    pub fn enter(&mut self, trips: f64) {
        self.close_stretch();
        let w = self.weight() * trips;
        self.weights.push(w);
    }

    pub fn exit(&mut self) {
        self.close_stretch();
        if self.weights.len() > 1 {
            self.weights.pop();
        }
    }

    /// Finishes counting: the last stretch's loads count too.
    pub fn finish(&mut self) -> InstructionMix {
        self.close_stretch();
        self.mix.clone()
    }

    /// Takes back what [`Counter::count`] added for an instruction that is left out
    /// after all (its returned share).
    pub fn uncount(mix: &mut InstructionMix, share: &Share) {
        if let Some(n) = mix.opcodes.get_mut(&share.opcode) {
            *n -= share.weight;
        }
        mix.independent -= share.independent;
    }

    /// Counts one instruction (its text without the trailing `;`), returning its share
    /// of the mix.
    pub fn count(&mut self, text: &str) -> Share {
        let w = self.weight();
        let text = text.trim();
        let op = match text.strip_prefix('@') {
            Some(rest) => rest.split_once(' ').map_or("", |(_, op)| op),
            None => text,
        };
        let opcode = op.split_whitespace().next().unwrap_or("");
        if opcode.starts_with("ld.global") {
            self.loaded = true;
        }
        let global = opcode.starts_with("ld.global") || opcode.starts_with("st.global");
        let copies = opcode.starts_with("cp.async.ca") || opcode.starts_with("cp.async.cg");
        if global || copies {
            // A warp's extra sectors over its 32 threads, 32 bytes each: extra bytes
            // per thread.
            self.mix.global_excess_bytes += w * self.next_global_excess.take().unwrap_or(0.0);
        }
        // A `cp.async` copy writes shared memory like a store; it loads from global
        // memory too, but the thread does not wait for it here (its `wait_group` comes
        // steps later), so it opens no load round.
        let copy = opcode.starts_with("cp.async.ca") || opcode.starts_with("cp.async.cg");
        // An `ldmatrix` is a shared load (of up to four matrices, its wavefronts set by
        // the emitter like any other).
        let matrices = opcode.starts_with("ldmatrix");
        if opcode.starts_with("ld.shared") || opcode.starts_with("st.shared") || copy || matrices {
            self.mix.shared_wavefronts += w * self.next_shared_ways.take().unwrap_or(1.0);
        }
        let independent = if self.independent {
            w
        } else if self.chains > 1 {
            w * (1.0 - 1.0 / self.chains as f64)
        } else {
            0.0
        };
        self.mix.independent += independent;
        *self.mix.opcodes.entry(opcode.to_string()).or_default() += w;
        Share {
            opcode: opcode.to_string(),
            weight: w,
            independent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_weigh_their_bodies_and_rounds_follow_iterations() {
        let mut c = Counter::default();
        c.count("ld.global.nc.f32 %f1, [%rd1]");
        c.enter(4.0);
        c.count("ld.global.nc.f32 %f2, [%rd2]");
        c.count("ld.global.nc.f32 %f3, [%rd3]");
        c.count("fma.rn.f32 %f7, %f2, %f3, %f7");
        c.count("@%p1 bra $L1");
        c.exit();
        c.next_shared_ways = Some(4.0);
        c.count("st.shared.f32 [%r4], %f7");
        c.enter(2.0);
        c.count("cp.async.ca.shared.global [%r5], [%rd4], 4, %r6");
        c.count("cp.async.commit_group");
        c.next_shared_ways = Some(4.0);
        c.count("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%r1, %r2, %r3, %r4}, [%r5+32]");
        c.count("cp.async.wait_group 1");
        c.exit();
        let m = c.finish();
        assert_eq!(m.opcodes["ld.global.nc.f32"], 9.0);
        assert_eq!(m.opcodes["fma.rn.f32"], 4.0);
        assert_eq!(m.opcodes["bra"], 4.0);
        // Copies are not waited for where they are issued.
        assert_eq!(m.load_rounds, 5.0);
        assert_eq!(m.shared_wavefronts, 4.0 + 2.0 + 2.0 * 4.0);
        assert_eq!(
            m.opcodes["ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"],
            2.0
        );
        assert_eq!(m.opcodes["cp.async.ca.shared.global"], 2.0);
    }
}
