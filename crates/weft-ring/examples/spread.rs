//! Prints how evenly the ring spreads the key space at a given vnode count:
//! `cargo run -p weft-ring --release --example spread [VNODES]`.

use weft_ring::{HostSpec, LoadTracker, Ring, RingConfig};

fn main() {
    let vnodes: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(weft_ring::DEFAULT_VNODES);
    const TRIALS: usize = 1000;
    println!("vnodes per host: {vnodes}; {TRIALS} random host sets per row");
    println!(
        "hosts | worst-host deviation: median p95 max | mean abs deviation: median max | bounded(1.15) worst: median max"
    );
    for n in [3usize, 5, 10, 20] {
        let (mut worst, mut mad, mut bounded) = (Vec::new(), Vec::new(), Vec::new());
        for trial in 0..TRIALS {
            let hosts: Vec<HostSpec> = (0..n)
                .map(|i| {
                    HostSpec::new(format!("10.{}.{}.{}:50002", trial % 256, trial / 256, i), 1)
                })
                .collect();
            let ring = Ring::new(
                hosts,
                RingConfig {
                    vnodes_per_host: vnodes,
                },
            )
            .unwrap();
            let ideal = 1.0 / n as f64;
            let devs: Vec<f64> = ring
                .ownership()
                .values()
                .map(|s| (s - ideal).abs() / ideal)
                .collect();
            worst.push(devs.iter().cloned().fold(0.0, f64::max));
            mad.push(devs.iter().sum::<f64>() / n as f64);
            if trial < 100 {
                let mut t = LoadTracker::new(115);
                let keys = 200 * n;
                for k in 0..keys {
                    t.assign(&ring, format!("actor-{k}").as_bytes());
                }
                let ideal = keys as f64 / n as f64;
                let w = ring
                    .hosts()
                    .iter()
                    .map(|h| (t.load(h) as f64 - ideal).abs() / ideal)
                    .fold(0.0, f64::max);
                bounded.push(w);
            }
        }
        for v in [&mut worst, &mut mad, &mut bounded] {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        }
        let pct = |v: &[f64], q: f64| 100.0 * v[((v.len() - 1) as f64 * q) as usize];
        println!(
            "{n:>5} | {:>6.1}% {:>5.1}% {:>5.1}% | {:>6.1}% {:>5.1}% | {:>6.1}% {:>5.1}%",
            pct(&worst, 0.5),
            pct(&worst, 0.95),
            pct(&worst, 1.0),
            pct(&mad, 0.5),
            pct(&mad, 1.0),
            pct(&bounded, 0.5),
            pct(&bounded, 1.0),
        );
    }
}
