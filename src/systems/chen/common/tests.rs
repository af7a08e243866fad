use super::*;
use crate::systems::chen::markov::{ChainShape, DataSpec, KernelPrior, Start, generate};

#[test]
fn subsets_are_every_set_of_at_most_d_heads() {
    let s = Subsets::new(3, 2);
    let labels: Vec<String> = (0..s.len()).map(|k| s.label(k)).collect();
    assert_eq!(
        labels,
        ["{}", "{1}", "{2}", "{3}", "{1,2}", "{1,3}", "{2,3}"]
    );
    // |𝒮_D| = Σ_{k ≤ D} C(H, k)
    assert_eq!(Subsets::new(5, 3).len(), 1 + 5 + 10 + 10);
    assert_eq!(Subsets::new(3, 3).len(), 8);
    assert_eq!(Subsets::new(3, 1).len(), 4);
    assert_eq!(s.index_of(&[1, 0]), Some(4));
    assert_eq!(s.index_of(&[0, 1, 2]), None);
    // head 2 (0-based 1) is in {2}, {1,2}, {2,3}
    let h: Vec<usize> = s.by_head[1].iter().map(|(k, _)| *k).collect();
    assert_eq!(h, vec![2, 4, 6]);
    assert_eq!(s.by_head[1][1].1, vec![0]);
}

#[test]
fn windows_and_layout() {
    let common = TfShape {
        d: 3,
        heads: 3,
        window: 3,
        degree: 2,
        rpe_window: RpeWindow::Common,
    };
    assert_eq!(common.max_offset(), 3);
    assert_eq!(common.offset(2, 0), 1);
    assert_eq!(common.own_index(2), 2);
    let stag = TfShape {
        rpe_window: RpeWindow::Staggered,
        ..common
    };
    // the authors' code: heads see {1,2,3}, {2,3,4}, {3,4,5}
    assert_eq!(
        (0..3)
            .map(|h| (0..3).map(|i| stag.offset(h, i)).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        vec![vec![1, 2, 3], vec![2, 3, 4], vec![3, 4, 5]]
    );
    assert_eq!(stag.max_offset(), 5);
    assert_eq!(stag.offset(1, stag.own_index(1)), 2);
    let lay = Layout {
        n_subsets: 7,
        heads: 3,
        window: 3,
    };
    let names = lay.names(&Subsets::new(3, 2));
    assert_eq!(names.len(), lay.len());
    assert_eq!(names[4], "c_{1,2}");
    assert_eq!(names[lay.w(1, 2)], "w_2_3");
    assert_eq!(names[lay.a()], "a");
}

/// Every position is counted once, in the bucket of its own history, with its own token.
#[test]
fn buckets_count_every_position_once() {
    let data = generate(&DataSpec {
        prior: KernelPrior::Dirichlet {
            shape: ChainShape::new(3, &[1, 2]),
            alpha: 0.3,
        },
        length: 25,
        start: Start::Uniform,
        n_sequences: 40,
        seed: 9,
    });
    for include_self in [false, true] {
        let b = Buckets::build(&data, 3, include_self);
        assert_eq!(b.n_sequences(), 40);
        for j in 0..40 {
            let x = data.sequence(j);
            let (b0, b1) = (b.seq_offsets[j], b.seq_offsets[j + 1]);
            let total: f64 = b.bucket_total[b0..b1].iter().sum();
            assert_eq!(total, 25.0);
            assert_eq!(b.seq_target[j], x[25]);
            let qk = b.query_key(b.seq_query[j] as usize);
            let skip = usize::from(include_self);
            if include_self {
                assert_eq!(qk[0], ZERO);
            }
            assert_eq!(&qk[skip..], &[x[24], x[23], x[22]]);
            for l in 0..25 {
                // find the bucket whose key is the history of position l
                let mut key = Vec::new();
                if include_self {
                    key.push(x[l]);
                }
                for o in 1..=3 {
                    key.push(if l >= o { x[l - o] } else { PAD });
                }
                let hits: Vec<usize> = (b0..b1)
                    .filter(|&bb| b.feature_key(b.bucket_feature[bb] as usize) == key.as_slice())
                    .collect();
                assert_eq!(hits.len(), 1);
                assert!(b.bucket_counts[hits[0] * 3 + x[l] as usize] >= 1.0);
            }
        }
    }
}
