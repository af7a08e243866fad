use ihdyn::flow::GradientFlow;
use ihdyn::model::gih_common::*;
use ihdyn::model::gih_transformer::*;
use ihdyn::model::markov::*;
use ihdyn::theory::gih::*;
fn main() {
    let t = std::time::Instant::now();
    let all = generate(&DataSpec {
        prior: KernelPrior::Dirichlet {
            shape: ChainShape::new(3, &[1, 2]),
            alpha: 0.1,
        },
        length: 100,
        start: Start::Uniform,
        n_sequences: 10000,
        seed: 2024,
    });
    let (train, _val) = split(&all, 0.9);
    println!("gen {:.3}s", t.elapsed().as_secs_f64());
    let shape = TfShape {
        d: 3,
        heads: 3,
        window: 3,
        degree: 2,
        rpe_window: RpeWindow::Common,
    };
    let t = std::time::Instant::now();
    let flow = GihFlow::new(
        GihModel {
            shape,
            head_norm: HeadNorm::None,
            loss: LossKind::Paper { epsilon: 0.1 },
        },
        &train,
    );
    println!("build {:.3}s", t.elapsed().as_secs_f64());
    let th = GihInit {
        c0: 0.01,
        a0: 0.01,
        w_plus: 3.0,
        w_minus: 0.1,
    }
    .theta(&shape, flow.layout());
    let mut g = vec![0.0; th.len()];
    let t = std::time::Instant::now();
    for _ in 0..100 {
        flow.grad(&th, &mut g);
    }
    println!("reduced grad {:.3} ms", t.elapsed().as_secs_f64() * 10.0);
    let full = GihTransformer::new(
        shape,
        LossKind::Paper { epsilon: 0.1 },
        FullSettings {
            layer_norm: true,
            ln_eps: 1e-5,
            self_attention: true,
            proj_init: 0.01,
        },
        &train,
    );
    let th = full.initial_theta(&th);
    let mut g = vec![0.0; th.len()];
    let t = std::time::Instant::now();
    for _ in 0..100 {
        full.grad(&th, &mut g);
    }
    println!("full grad {:.3} ms", t.elapsed().as_secs_f64() * 10.0);
}
