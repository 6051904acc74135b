//! A mock engine for testing the harness itself (never benchmarked as a real engine).
//!
//! Deterministic tokens (`next = (31 * last + 7) mod 49152`), a fixed sleep per forward call
//! (`MOCK_ENGINE_SLEEP_US`, default 1000; 0 measures the kit's own per-token overhead) and
//! failure modes chosen with `MOCK_ENGINE=ok|hang|crash|garbage|fail-load|panic`.

use std::collections::BTreeMap;
use std::time::Duration;

use engine_kit::{Engine, EngineMeta, EngineResult};
use lab_protocol::{EngineIdentity, Request};

const VOCAB: usize = 49152;

struct Mock {
    identity: EngineIdentity,
    last: u32,
    sleep: Duration,
}

impl Mock {
    fn emit(&mut self, logits: &mut Vec<f32>) {
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        logits.clear();
        logits.resize(VOCAB, 0.0);
        logits[((31 * self.last as usize) + 7) % VOCAB] = 1.0;
    }
}

impl Engine for Mock {
    fn identity(&self) -> EngineIdentity {
        self.identity.clone()
    }
    fn reset(&mut self) -> EngineResult<()> {
        Ok(())
    }
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.last = *prompt.last().unwrap_or(&0);
        self.emit(logits);
        Ok(())
    }
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        self.last = token;
        self.emit(logits);
        Ok(())
    }
}

fn load(request: &Request) -> EngineResult<Mock> {
    match std::env::var("MOCK_ENGINE").as_deref().unwrap_or("ok") {
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        "crash" => {
            eprintln!("mock: simulated crash");
            std::process::exit(3)
        }
        "garbage" => {
            println!("this is not json");
            std::process::exit(0)
        }
        "fail-load" => return Err("simulated load failure".into()),
        "panic" => panic!("simulated panic"),
        _ => {}
    }
    Ok(Mock {
        identity: EngineIdentity {
            name: "mock".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            backend: "none".into(),
            device: request.device.to_string(),
            dtype: request.model.dtype.as_str().into(),
            weight_format: request.model.format,
            threads: request.threads.unwrap_or(1),
            settings: BTreeMap::new(),
        },
        last: 0,
        sleep: Duration::from_micros(
            std::env::var("MOCK_ENGINE_SLEEP_US")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1000),
        ),
    })
}

fn main() {
    engine_kit::run_main(
        EngineMeta {
            name: "mock",
            version: env!("CARGO_PKG_VERSION"),
            backend: "none",
        },
        load,
    )
}
