use super::*;

fn dims(n: usize) -> Dims {
    Dims {
        n,
        d: 6,
        d_head: 4,
        vocab: 2 * n + 3,
        positions: 2 * n + 3,
    }
}

fn config(dims: Dims, loss: Loss, mask: Mask, positions: Positions) -> Config {
    Config {
        dims,
        loss,
        loss_scale: 0.7,
        mask,
        learned_positions: positions == Positions::Learned,
    }
}

/// The model of the module doc written out naively for one sequence: explicit W_Q h, W_K h,
/// W_V h for every row of both layers, the scale 1/√d_head, the mask, the additive residual;
/// returns the query's logits.
fn naive_logits(p: &Params, tokens: &[u32], mask: Mask) -> Vec<f64> {
    let dims = p.dims;
    let (t, d) = (dims.t(), dims.d);
    let mv = |b: Block, x: &[f64]| -> Vec<f64> {
        let (rows, cols) = b.shape(&dims);
        let w = p.block(b);
        (0..rows)
            .map(|i| (0..cols).map(|j| w[i * cols + j] * x[j]).sum())
            .collect()
    };
    let mut h: Vec<Vec<f64>> = (0..t)
        .map(|k| {
            let v = tokens[k] as usize;
            (0..d)
                .map(|i| p.block(Block::Tok)[v * d + i] + p.block(Block::Pos)[k * d + i])
                .collect()
        })
        .collect();
    let scale = 1.0 / (dims.d_head as f64).sqrt();
    for [q, k, v, o] in [
        [Block::Q1, Block::K1, Block::V1, Block::O1],
        [Block::Q2, Block::K2, Block::V2, Block::O2],
    ] {
        let next: Vec<Vec<f64>> = (0..t)
            .map(|row| {
                let keys = if mask == Mask::Inclusive {
                    row + 1
                } else {
                    row
                };
                let mut out = h[row].clone();
                if keys == 0 {
                    return out;
                }
                let qv = mv(q, &h[row]);
                let s: Vec<f64> = (0..keys)
                    .map(|j| {
                        let kv = mv(k, &h[j]);
                        scale * qv.iter().zip(&kv).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let zsum: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                let mut c = vec![0.0; dims.d_head];
                for j in 0..keys {
                    let a = (s[j] - mx).exp() / zsum;
                    for (ci, vj) in c.iter_mut().zip(mv(v, &h[j])) {
                        *ci += a * vj;
                    }
                }
                for (o, add) in out.iter_mut().zip(mv(o, &c)) {
                    *o += add;
                }
                out
            })
            .collect();
        h = next;
    }
    mv(Block::Unemb, &h[t - 1])
}

fn naive_loss(p: &Params, batch: &Batch, cfg: &Config) -> f64 {
    let t = cfg.dims.t();
    let mut sum = 0.0;
    for b in 0..batch.size() {
        let z = naive_logits(p, &batch.tokens[b * t..(b + 1) * t], cfg.mask);
        let y = batch.targets[b] as usize;
        sum += match cfg.loss {
            Loss::Mse => z
                .iter()
                .enumerate()
                .map(|(v, zv)| (zv - if v == y { 1.0 } else { 0.0 }).powi(2))
                .sum::<f64>(),
            Loss::Ce => {
                let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
                lse - z[y]
            }
        };
    }
    cfg.loss_scale * sum / batch.size() as f64
}

/// Every combination of loss, mask and position embedding.
fn configs(dims: Dims) -> Vec<(Config, Positions)> {
    let mut out = Vec::new();
    for loss in [Loss::Mse, Loss::Ce] {
        for mask in [Mask::Inclusive, Mask::Strict] {
            for pos in [Positions::Learned, Positions::Fixed] {
                out.push((config(dims, loss, mask, pos), pos));
            }
        }
    }
    out
}

#[test]
fn batched_loss_equals_the_naive_forward_pass() {
    let n = 3;
    let size = 37; // three chunks, the last one partial
    let dims = dims(n);
    for query in [Query::Last, Query::Uniform] {
        let batch = Batch::sample(&mut TokenSampler::new(n, dims.vocab, query, 4, 0), size);
        let mut seen = Vec::new();
        for (cfg, pos) in configs(dims) {
            let p = Params::init(dims, 0.6, pos, 9);
            let got = Model::new(cfg, size).loss(&p, &batch);
            let want = naive_loss(&p, &batch, &cfg);
            assert!(
                (got - want).abs() < 1e-12 * want.abs().max(1.0),
                "{cfg:?}: {got} vs naive {want}"
            );
            seen.push(got);
        }
        // the eight settings give eight different losses
        seen.sort_by(f64::total_cmp);
        seen.dedup();
        assert_eq!(seen.len(), 8);
    }
}

/// Every entry of every block (T, P, W_Q, W_K, W_V, W_O of both layers, W_o) against central
/// differences of the loss, for both losses, both masks, learned and fixed positions (whose
/// gradient is then 0), on a batch of two chunks.
#[test]
fn gradient_matches_central_differences_in_every_block() {
    let n = 2;
    let size = 19;
    let dims = dims(n);
    let batch = Batch::sample(
        &mut TokenSampler::new(n, dims.vocab, Query::Uniform, 7, 0),
        size,
    );
    for (cfg, pos) in configs(dims) {
        let p = Params::init(dims, 0.5, pos, 3);
        let mut model = Model::new(cfg, size);
        let mut g = Params::zeros(dims);
        model.loss_and_grad(&p, &batch, &mut g);
        let h = 1e-6;
        for block in BLOCKS {
            let mut largest = 0.0f64;
            for i in p.range(block) {
                let mut plus = p.clone();
                plus.data[i] += h;
                let mut minus = p.clone();
                minus.data[i] -= h;
                let fd = (model.loss(&plus, &batch) - model.loss(&minus, &batch)) / (2.0 * h);
                let an = g.data[i];
                if block == Block::Pos && pos == Positions::Fixed {
                    assert_eq!(an, 0.0, "fixed positions have no gradient");
                    continue;
                }
                assert!(
                    (an - fd).abs() < 1e-8 + 1e-6 * fd.abs(),
                    "{cfg:?} {} entry {i}: analytic {an}, finite difference {fd}",
                    block.name()
                );
                largest = largest.max(an.abs());
            }
            if !(block == Block::Pos && pos == Positions::Fixed) {
                assert!(largest > 1e-4, "{cfg:?} {}: gradient all ~0", block.name());
            }
        }
    }
}

/// Three GD and three Adam steps on a fresh batch each give the same bits on 1 and 2 threads.
#[test]
fn training_steps_are_bit_identical_on_one_and_two_threads() {
    let dims = Dims {
        n: 4,
        d: 16,
        d_head: 8,
        vocab: 12,
        positions: 9,
    };
    for (optimizer, loss) in [(Optimizer::Gd, Loss::Mse), (Optimizer::Adam, Loss::Ce)] {
        let cfg = config(dims, loss, Mask::Inclusive, Positions::Learned);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut trainer = Trainer::new(cfg, Query::Uniform, 70, optimizer, 11);
                let mut p = Params::init(dims, 0.2, Positions::Learned, 3);
                let mut losses = Vec::new();
                for step in 0..3 {
                    losses.push(trainer.evaluate(&p).to_bits());
                    trainer.apply(&mut p, step, 0.05);
                }
                (losses, p)
            })
        };
        let (l1, p1) = run(1);
        let (l2, p2) = run(2);
        assert_eq!(l1, l2, "{optimizer:?}");
        assert_eq!(p1, p2, "{optimizer:?}");
    }
}

/// The trainer's step is the model on the batch its chunk streams drew, and chunk c's
/// sequences are those of stream (seed, c).
#[test]
fn a_trainer_step_is_the_model_on_the_batch_its_chunk_streams_draw() {
    let d = dims(3);
    let cfg = config(d, Loss::Ce, Mask::Inclusive, Positions::Learned);
    let size = 40;
    let mut trainer = Trainer::new(cfg, Query::Uniform, size, Optimizer::Gd, 21);
    let p = Params::init(d, 0.4, Positions::Learned, 1);
    let loss = trainer.evaluate(&p);
    let batch = trainer.last_batch().clone();
    let t = d.t();
    for c in 0..size.div_ceil(CHUNK) {
        let m = CHUNK.min(size - c * CHUNK);
        let mut s = TokenSampler::new(d.n, d.vocab, Query::Uniform, 21, c as u64);
        let own = Batch::sample(&mut s, m);
        assert_eq!(own.tokens, batch.tokens[c * CHUNK * t..(c * CHUNK + m) * t]);
        assert_eq!(own.targets, batch.targets[c * CHUNK..c * CHUNK + m]);
    }
    let mut g = Params::zeros(d);
    let direct = Model::new(cfg, size).loss_and_grad(&p, &batch, &mut g);
    assert_eq!(loss.to_bits(), direct.to_bits());
    assert_eq!(trainer.gradient(), &g);
    // a second evaluation draws a new batch; a fixed-batch trainer keeps its first one
    trainer.evaluate(&p);
    assert_ne!(trainer.last_batch(), &batch);
    let mut fixed = Trainer::new(cfg, Query::Uniform, size, Optimizer::Gd, 21).with_fixed_batch();
    fixed.evaluate(&p);
    fixed.evaluate(&p);
    assert_eq!(fixed.last_batch(), &batch);
}

/// GD moves every coordinate by −η∇L except fixed positions; Adam's first step moves each by
/// η·g/(|g| + ε), about η·sign(g) (bias correction makes m̂ = g, v̂ = g²).
#[test]
fn gd_and_adam_updates_and_fixed_positions_stay() {
    let d = dims(2);
    for pos in [Positions::Learned, Positions::Fixed] {
        let cfg = config(d, Loss::Mse, Mask::Inclusive, pos);
        for optimizer in [Optimizer::Gd, Optimizer::Adam] {
            let mut trainer = Trainer::new(cfg, Query::Last, 8, optimizer, 2);
            let p0 = Params::init(d, 0.5, pos, 4);
            let mut p = p0.clone();
            trainer.evaluate(&p);
            let g = trainer.gradient().clone();
            trainer.apply(&mut p, 0, 0.01);
            let pos_range = p.range(Block::Pos);
            for i in 0..p.len() {
                let want = if pos == Positions::Fixed && pos_range.contains(&i) {
                    p0.data[i]
                } else {
                    match optimizer {
                        Optimizer::Gd => p0.data[i] - 0.01 * g.data[i],
                        Optimizer::Adam => p0.data[i] - 0.01 * g.data[i] / (g.data[i].abs() + 1e-8),
                    }
                };
                assert!(
                    (p.data[i] - want).abs() < 1e-9,
                    "{pos:?} {optimizer:?} entry {i}"
                );
            }
        }
    }
}

/// Fixed positions are the sinusoidal rows: unit norm, p_0 = (0, 1, 0, 1, ...)/√(D/2).
#[test]
fn fixed_positions_are_unit_norm_sinusoids() {
    let mut p = vec![0.0; 5 * 6];
    sinusoidal(5, 6, &mut p);
    for k in 0..5 {
        let norm: f64 = p[k * 6..(k + 1) * 6].iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-14);
    }
    let s = 1.0 / 3f64.sqrt();
    for (c, v) in p[..6].iter().enumerate() {
        let want = if c % 2 == 0 { 0.0 } else { s };
        assert!((v - want).abs() < 1e-15);
    }
    assert!((p[6] - 1f64.sin() * s).abs() < 1e-15);
}

#[test]
fn the_learner_names_coordinates_by_block_row_and_column() {
    use crate::train::Learner;
    let d = dims(2);
    let cfg = config(d, Loss::Mse, Mask::Inclusive, Positions::Learned);
    let l = StandardLearner {
        trainer: Trainer::new(cfg, Query::Last, 4, Optimizer::Gd, 0),
        params: Params::init(d, 0.1, Positions::Learned, 0),
    };
    assert_eq!(l.param_name(0), "T[0,0]");
    assert_eq!(l.param_name(7), "T[1,1]");
    let q1 = l.params.range(Block::Q1).start;
    assert_eq!(l.param_name(q1 + 6 + 2), "W_Q1[1,2]");
    assert_eq!(l.param_name(l.params.len() - 1), "W_o[6,5]");
    assert_eq!(
        l.params.locate(l.params.range(Block::O2).start + 5),
        (Block::O2, 1, 1)
    );
}
