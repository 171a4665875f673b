//! What the simulation did, per seed and in total, so a run shows it exercised every path.

use std::fmt;
use std::ops::AddAssign;

/// Counters of one or many seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub seeds: usize,
    pub steps: usize,
    pub appended: usize,
    pub pumps: usize,
    pub pulled: usize,
    pub partitions: usize,
    pub partitioned_pumps: usize,
    pub kills: usize,
    pub crashes_mid_pump: usize,
    pub checkpoints: usize,
    pub gc_deleted: usize,
    pub rebases: usize,
    pub rebased_by_pull: usize,
    pub leases: usize,
    pub proceeds: usize,
    pub already_committed: usize,
    pub stale_epochs: usize,
    pub not_held: usize,
    pub heal_rounds: usize,
    pub runaway_clocks: usize,
    pub held_pumps: usize,
    pub blind_fences: usize,
}

impl AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        self.seeds += o.seeds;
        self.steps += o.steps;
        self.appended += o.appended;
        self.pumps += o.pumps;
        self.pulled += o.pulled;
        self.partitions += o.partitions;
        self.partitioned_pumps += o.partitioned_pumps;
        self.kills += o.kills;
        self.crashes_mid_pump += o.crashes_mid_pump;
        self.checkpoints += o.checkpoints;
        self.gc_deleted += o.gc_deleted;
        self.rebases += o.rebases;
        self.rebased_by_pull += o.rebased_by_pull;
        self.leases += o.leases;
        self.proceeds += o.proceeds;
        self.already_committed += o.already_committed;
        self.stale_epochs += o.stale_epochs;
        self.not_held += o.not_held;
        self.heal_rounds += o.heal_rounds;
        self.runaway_clocks += o.runaway_clocks;
        self.held_pumps += o.held_pumps;
        self.blind_fences += o.blind_fences;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seeds, {} steps: {} ops appended, {} pumps ({} ops journaled from others), \
             {} partitions ({} refused pumps), {} runaway clocks ({} pumps holding a chain \
             back, {} fences blind to it), {} kills ({} mid-pump), {} checkpoints, \
             {} ops collected, {} rebases + {} by compacted pulls, {} leases; fence: {} proceed, \
             {} already_committed, {} stale_epoch, {} not_held; {} heal rounds",
            self.seeds,
            self.steps,
            self.appended,
            self.pumps,
            self.pulled,
            self.partitions,
            self.partitioned_pumps,
            self.runaway_clocks,
            self.held_pumps,
            self.blind_fences,
            self.kills,
            self.crashes_mid_pump,
            self.checkpoints,
            self.gc_deleted,
            self.rebases,
            self.rebased_by_pull,
            self.leases,
            self.proceeds,
            self.already_committed,
            self.stale_epochs,
            self.not_held,
            self.heal_rounds,
        )
    }
}
