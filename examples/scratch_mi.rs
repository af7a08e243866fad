use ihdyn::model::markov::*;
use ihdyn::theory::gih_mi::*;
fn main() {
    for (d, pa, h, deg) in [
        (3usize, vec![1usize, 2], 3usize, 2usize),
        (3, vec![1, 2], 3, 3),
        (3, vec![1, 2], 3, 1),
    ] {
        let prior = KernelPrior::Dirichlet {
            shape: ChainShape::new(d, &pa),
            alpha: 0.1,
        };
        let t = std::time::Instant::now();
        let est = chi2_mi(
            &prior,
            &MiSpec {
                heads: h,
                degree: deg,
                power: 2,
                method: MiMethod::Exact,
                draws: 10000,
                pairs: 100,
                seed: 1,
            },
        )
        .unwrap();
        println!("{:?} D={deg} {:.2}s", pa, t.elapsed().as_secs_f64());
        for k in 0..est.mi.len() {
            println!(
                "  {} {:.5} ± {:.5}",
                est.subsets.label(k),
                est.mi[k],
                est.stderr[k]
            );
        }
        println!("  S* = {} gap {:.4}", est.best_label(), est.gap);
    }
}
