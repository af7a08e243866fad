//! The minimal ICL task in tokens (docs/theory/musat.md §3, §11): a sequence is N item→label
//! pairs and the query item, T = 2N + 1 token ids:
//!
//! | position (0-based) | token |
//! |---|---|
//! | 2i − 2 | item i |
//! | 2i − 1 | label i |
//! | 2N | the query item x_q |
//!
//! and the target is label q. The 2N items and labels of a sequence are distinct tokens drawn
//! uniformly without replacement from the vocabulary 0..N_E (a partial Fisher–Yates shuffle of
//! a kept permutation: the first 2N entries after the swaps are a uniform ordered sample
//! whatever order the permutation was left in), so the pairing item i → label i is random per
//! sequence and only the context tells it. q is N (`last`) or uniform in 1..N (`uniform`, one
//! draw before the tokens).
//!
//! Each sampler draws from its own seeded ChaCha8 stream (seed, stream); the same (seed,
//! stream) gives the same sequences on any machine and thread count. Nothing is allocated per
//! draw.

use crate::systems::musat::musat3::Query;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Draws token sequences of the ICL task.
#[derive(Debug, Clone)]
pub struct TokenSampler {
    n: usize,
    vocab: usize,
    query: Query,
    rng: ChaCha8Rng,
    perm: Vec<u32>,
}

impl TokenSampler {
    /// A sampler of N pairs over a vocabulary of `vocab` ≥ 2N tokens on stream `stream` of
    /// `seed`.
    pub fn new(n: usize, vocab: usize, query: Query, seed: u64, stream: u64) -> Self {
        assert!(
            n >= 1 && vocab >= 2 * n,
            "the vocabulary must hold 2N tokens"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        TokenSampler {
            n,
            vocab,
            query,
            rng,
            perm: (0..vocab as u32).collect(),
        }
    }

    /// Tokens per sequence, T = 2N + 1.
    pub fn t(&self) -> usize {
        2 * self.n + 1
    }

    /// Draw one sequence into `tokens` (T ids); returns (target, q) with q 1-based.
    pub fn sample(&mut self, tokens: &mut [u32]) -> (u32, usize) {
        let n = self.n;
        debug_assert_eq!(tokens.len(), self.t());
        let q = match self.query {
            Query::Last => n,
            Query::Uniform => self.rng.random_range(1..=n),
        };
        for i in 0..2 * n {
            let j = self.rng.random_range(i..self.vocab);
            self.perm.swap(i, j);
        }
        for i in 0..n {
            tokens[2 * i] = self.perm[i];
            tokens[2 * i + 1] = self.perm[n + i];
        }
        tokens[2 * n] = self.perm[q - 1];
        (self.perm[n + q - 1], q)
    }

    /// Draw `targets.len()` sequences into consecutive slots of `tokens`.
    pub fn fill(&mut self, tokens: &mut [u32], targets: &mut [u32]) {
        let t = self.t();
        for (b, y) in targets.iter_mut().enumerate() {
            *y = self.sample(&mut tokens[b * t..(b + 1) * t]).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequence has 2N distinct tokens in the vocabulary, the query repeats item q and
    /// the target is label q; with query last q = N; with query uniform every q and every
    /// token occurs, about equally often.
    #[test]
    fn sequences_pair_distinct_tokens_and_ask_for_the_label_of_the_query() {
        for query in [Query::Last, Query::Uniform] {
            let (n, vocab) = (4, 11);
            let mut s = TokenSampler::new(n, vocab, query, 3, 1);
            let mut tok = vec![0u32; 2 * n + 1];
            let mut q_count = vec![0usize; n + 1];
            let mut tok_count = vec![0usize; vocab];
            let draws = 20000;
            for _ in 0..draws {
                let (y, q) = s.sample(&mut tok);
                let mut seen: Vec<u32> = tok[..2 * n].to_vec();
                seen.sort();
                seen.dedup();
                assert_eq!(seen.len(), 2 * n, "{tok:?}");
                assert!(tok.iter().all(|&v| (v as usize) < vocab));
                assert_eq!(tok[2 * n], tok[2 * (q - 1)]);
                assert_eq!(y, tok[2 * (q - 1) + 1]);
                q_count[q] += 1;
                for &v in &tok[..2 * n] {
                    tok_count[v as usize] += 1;
                }
            }
            match query {
                Query::Last => assert_eq!(q_count[n], draws),
                Query::Uniform => {
                    for &c in &q_count[1..] {
                        let p = c as f64 / draws as f64;
                        assert!((p - 0.25).abs() < 0.02, "{q_count:?}");
                    }
                }
            }
            // each token is one of the 2N drawn with probability 2N/N_E
            let want = draws as f64 * 2.0 * n as f64 / vocab as f64;
            for &c in &tok_count {
                assert!((c as f64 - want).abs() < 0.05 * want, "{tok_count:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_and_stream_give_the_same_sequences() {
        let draw = |seed, stream| {
            let mut s = TokenSampler::new(3, 9, Query::Uniform, seed, stream);
            let (mut t, mut y) = (vec![0u32; 7 * 5], vec![0u32; 5]);
            s.fill(&mut t, &mut y);
            (t, y)
        };
        assert_eq!(draw(1, 2), draw(1, 2));
        assert_ne!(draw(1, 2), draw(1, 3));
        assert_ne!(draw(1, 2), draw(2, 2));
    }
}
