//! How many services build at once when `--parallel` is not given.
//!
//! Builds mostly wait, on the registry, on I/O and on the programs their `RUN` steps start, not
//! on the CPU: BuildKit schedules the steps of every running build itself, and
//! `docker buildx bake` starts every target that is ready at once. Capping at the number of
//! CPUs (2 on a small runner) left BuildKit idle (issue 16: 1.89x slower than bake on 11
//! independent services, 0.55x with `--parallel 11`). So the default is every selected service
//! (the scheduler starts a service only when its dependencies are built, so the graph decides
//! how many are really ready), capped by the engine's memory, one build per
//! [`MEMORY_PER_BUILD`] (a `RUN` step is a container), and by [`MAX_DEFAULT`] BuildKit
//! sessions at once (the 20.10 engine loses track of jobs when bake opens a hundred and more:
//! "no such job").

/// The engine memory counted per concurrent build.
pub const MEMORY_PER_BUILD: u64 = 512 << 20;

/// The most builds the default runs at once.
pub const MAX_DEFAULT: usize = 32;

/// The default parallelism and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub parallel: usize,
    pub why: String,
}

/// The default for `services` selected services on an engine with `mem_total` bytes of memory
/// (`None`: unknown).
pub fn default(services: usize, mem_total: Option<u64>) -> Choice {
    let by_memory = mem_total.map(|m| (m / MEMORY_PER_BUILD).max(1) as usize);
    let cap = by_memory.map_or(MAX_DEFAULT, |m| m.min(MAX_DEFAULT));
    let parallel = services.clamp(1, cap);
    let why = if parallel == services.max(1) {
        format!("every service that is ready ({services} selected)")
    } else if by_memory.is_some_and(|m| m < MAX_DEFAULT) {
        format!(
            "{parallel} of {services}: one per {} MiB of the engine's {} MiB",
            MEMORY_PER_BUILD >> 20,
            mem_total.unwrap_or_default() >> 20
        )
    } else {
        format!("{parallel} of {services}: the most BuildKit sessions the default opens at once")
    };
    Choice { parallel, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_when_memory_allows() {
        assert_eq!(default(11, Some(16 << 30)).parallel, 11);
        assert_eq!(default(11, None).parallel, 11);
        assert_eq!(default(0, None).parallel, 1);
    }

    #[test]
    fn capped_by_memory_then_by_sessions() {
        let small = default(60, Some(2 << 30));
        assert_eq!(small.parallel, 4);
        assert!(
            small.why.contains("512 MiB of the engine's 2048 MiB"),
            "{}",
            small.why
        );
        let big = default(200, Some(64 << 30));
        assert_eq!(big.parallel, MAX_DEFAULT);
        assert!(big.why.contains("BuildKit sessions"), "{}", big.why);
        assert_eq!(default(200, Some(100 << 20)).parallel, 1);
    }
}
