//! Where and how wide every engine runs, decided once per plan ([`Placement::of`]) and carried
//! from here only: the request's `threads`, the thread pools' environment of the launch
//! ([`Placement::env`]: rayon's, or OpenMP's and MKL's, bound to the CPUs when pinned), and
//! the pinning ([`Placement::pin_native`]: `taskset` natively; a container gets
//! `--cpuset-cpus` from its sandbox). Recorded once: `BenchSpec::threads` and `cpuset_cpus`.

use lab_results::spec::BenchSpec;

use crate::catalog::EngineKind;
use crate::runner::Launch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Threads every engine uses.
    pub threads: usize,
    /// The CPUs every engine is pinned to (`0-1`), or none.
    pub cpus: Option<String>,
}

impl Placement {
    pub fn of(spec: &BenchSpec) -> Placement {
        Placement {
            threads: spec.threads,
            cpus: spec.cpuset_cpus.clone(),
        }
    }

    /// The environment an engine of `kind` gets for its thread pools.
    pub fn env(&self, kind: EngineKind) -> Vec<(String, String)> {
        let t = self.threads.to_string();
        let mut env: Vec<(String, String)> = match kind {
            EngineKind::Rust => vec![("RAYON_NUM_THREADS".into(), t)],
            EngineKind::Python => vec![
                ("OMP_NUM_THREADS".into(), t.clone()),
                ("MKL_NUM_THREADS".into(), t),
            ],
        };
        if self.cpus.is_some() {
            // OpenMP engines (llama.cpp, PyTorch) bind each thread to one CPU of the set.
            env.push(("OMP_PROC_BIND".into(), "close".into()));
            env.push(("OMP_PLACES".into(), "threads".into()));
        }
        env
    }

    /// Pins a native process to the CPUs (`taskset -c <cpus> <program> <args>`).
    pub fn pin_native(&self, launch: &mut Launch) {
        if let Some(cpus) = &self.cpus {
            let mut args = vec![
                "-c".to_string(),
                cpus.clone(),
                std::mem::take(&mut launch.program),
            ];
            args.append(&mut launch.args);
            launch.program = "taskset".into();
            launch.args = args;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_and_pinning_reach_the_pools_and_the_process() {
        let p = Placement {
            threads: 2,
            cpus: Some("0-1".into()),
        };
        let env = p.env(EngineKind::Python);
        assert!(env.contains(&("OMP_NUM_THREADS".into(), "2".into())));
        assert!(env.contains(&("OMP_PROC_BIND".into(), "close".into())));
        let mut l = Launch {
            program: "engine".into(),
            args: vec!["-x".into()],
            ..Default::default()
        };
        p.pin_native(&mut l);
        assert_eq!(
            (l.program.as_str(), l.args.join(" ")),
            ("taskset", "-c 0-1 engine -x".into())
        );
        let free = Placement {
            threads: 3,
            cpus: None,
        };
        assert_eq!(
            free.env(EngineKind::Rust),
            [("RAYON_NUM_THREADS".to_string(), "3".to_string())]
        );
        let mut l2 = l.clone();
        free.pin_native(&mut l2);
        assert_eq!((l2.program, l2.args), (l.program, l.args));
    }
}
