//! The exact LASSO path by LARS with the lasso modification (homotopy), in Gram form.
//!
//! For centred data and `G = XᵀX / n`, `c = Xᵀy / n`, the solution `b(α)` of
//!
//! ```text
//! minimise  1/(2n) ||y − X b||²  +  α ||b||₁
//! ```
//!
//! is piecewise linear in `α`. Starting at `α_max = max|c_j|` with `b = 0`, the path keeps
//! the active set `A` with `r_A = (c − G b)_A = α · sign(b_A)`; while `α` decreases by
//! `γ`, `b_A` moves by `γ w` with `G_AA w = sign_A` and every correlation by `−γ (G w)`.
//! A knot is where an inactive correlation reaches `±α` (the column joins) or an active
//! coefficient reaches zero (it leaves: the lasso modification). `G_AA` is kept as a
//! Cholesky factor, extended by one row per join (O(a²)) and refactored on a drop (rare).
//! One knot costs O(p · a); a path to `a` active columns about `p · a² / 2`.
//!
//! This is what epftoolbox's LEAR does with scikit-learn's `LassoLarsIC` (criterion at
//! every knot) followed by `Lasso` at the chosen `α`; here the refit is the same exact
//! path run to that `α` instead of coordinate descent to a tolerance. Exact paths also
//! make a fit a pure function of its inputs: no warm start, no tolerance to tune.
//!
//! # Invariants
//! - Coordinates with `G_jj <= 0` (constant columns) never enter.
//! - The path stops (and reports the last knot) if the next column is numerically
//!   collinear with the active ones, i.e. at the rank of `G`.
//! - `knots` is bounded by `max_knots`; every knot's `α` is `<=` the previous one.

/// Relative pivot below which a joining column counts as collinear with the active set.
const COLLINEAR: f64 = 1e-10;

/// One knot of the path, as seen by the callback of [`lasso_path`].
#[derive(Debug, Clone, Copy)]
pub struct Knot<'a> {
    /// Penalty at the knot.
    pub alpha: f64,
    /// Coefficients at the knot (all `p`).
    pub coefficients: &'a [f64],
    /// Non-zero coefficients at the knot.
    pub n_nonzero: usize,
    /// `||y − X b||² / n` at the knot.
    pub rss_over_n: f64,
}

/// What the callback tells the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Go on to the next knot.
    Continue,
    /// Stop here.
    Stop,
}

/// Follows the LASSO path from `α_max` down to `alpha_stop` (`0` for the whole path),
/// calling `visit` at `α_max` and at every knot (and at `alpha_stop` itself if it lies
/// between knots), until `visit` returns [`Walk::Stop`], the path ends, or `max_knots`
/// knots were visited. Returns the coefficients at the last point visited and the
/// number of knots.
///
/// # Panics
/// If `gram.len() != p²` or `xty.len() != p` (caller bugs).
pub fn lasso_path(
    gram: &[f64],
    xty: &[f64],
    yty: f64,
    alpha_stop: f64,
    max_knots: usize,
    mut visit: impl FnMut(&Knot<'_>) -> Walk,
) -> (Vec<f64>, usize) {
    let p = xty.len();
    assert_eq!(gram.len(), p * p, "Gram matrix must be p × p");
    let mut b = vec![0.0; p];
    let mut r = xty.to_vec();
    let usable = |j: usize| gram[j * p + j] > 0.0;
    let Some((first, alpha_max)) = (0..p)
        .filter(|&j| usable(j))
        .map(|j| (j, xty[j].abs()))
        .fold(None, |best: Option<(usize, f64)>, (j, v)| match best {
            Some((_, bv)) if bv >= v => best,
            _ => Some((j, v)),
        })
    else {
        return (b, 0);
    };
    let mut alpha = alpha_max;
    let knot = |alpha: f64, b: &[f64]| {
        let (mut b_dot_c, mut l1, mut n_nonzero) = (0.0, 0.0, 0);
        for (bj, cj) in b.iter().zip(xty) {
            if *bj != 0.0 {
                b_dot_c += bj * cj;
                l1 += bj.abs();
                n_nonzero += 1;
            }
        }
        // rss/n = yᵀy/n − 2 bᵀc + bᵀG b and G b = c − r, with bᵀr = α ||b||₁ on the path.
        (n_nonzero, (yty - b_dot_c - alpha * l1).max(0.0))
    };
    let (n_nonzero, rss_over_n) = knot(alpha, &b);
    if !(alpha_max > alpha_stop && alpha_max.is_finite())
        || visit(&Knot {
            alpha,
            coefficients: &b,
            n_nonzero,
            rss_over_n,
        }) == Walk::Stop
    {
        return (b, 0);
    }
    // Active set, its signs, and the Cholesky factor of G_AA (row-major, stride p).
    let mut active: Vec<usize> = Vec::with_capacity(p);
    let mut signs: Vec<f64> = Vec::with_capacity(p);
    let mut chol = vec![0.0; p * p];
    let mut is_active = vec![false; p];
    let mut w = vec![0.0; p];
    let mut u = vec![0.0; p];
    let mut scratch = vec![0.0; p];
    let mut joining = Some(first);
    let mut just_dropped: Option<usize> = None;
    let mut knots = 0;
    while knots < max_knots {
        if let Some(j) = joining.take() {
            if !extend_cholesky(gram, p, &active, j, &mut chol, &mut scratch) {
                break;
            }
            active.push(j);
            signs.push(if r[j] >= 0.0 { 1.0 } else { -1.0 });
            is_active[j] = true;
        }
        let a = active.len();
        // G_AA w = signs.
        w[..a].copy_from_slice(&signs);
        cholesky_solve_in_place(&chol, p, a, &mut w[..a]);
        // u = G[:, A] w.
        u.iter_mut().for_each(|v| *v = 0.0);
        for (k, &j) in active.iter().enumerate() {
            let wk = w[k];
            for (ui, g) in u.iter_mut().zip(&gram[j * p..(j + 1) * p]) {
                *ui += wk * g;
            }
        }
        let mut gamma = alpha - alpha_stop;
        let mut event: Option<(usize, bool)> = None; // (index, joins)
        for j in 0..p {
            if is_active[j] || !usable(j) || Some(j) == just_dropped {
                continue;
            }
            let (rj, uj) = (r[j], u[j]);
            if uj < 1.0 {
                let g = (alpha - rj) / (1.0 - uj);
                if g >= 0.0 && g < gamma {
                    gamma = g;
                    event = Some((j, true));
                }
            }
            if uj > -1.0 {
                let g = (alpha + rj) / (1.0 + uj);
                if g >= 0.0 && g < gamma {
                    gamma = g;
                    event = Some((j, true));
                }
            }
        }
        for (k, &j) in active.iter().enumerate() {
            if b[j] != 0.0 && b[j] * w[k] < 0.0 {
                let g = -b[j] / w[k];
                if g < gamma {
                    gamma = g.max(0.0);
                    event = Some((k, false));
                }
            }
        }
        for (k, &j) in active.iter().enumerate() {
            b[j] += gamma * w[k];
        }
        for (ri, ui) in r.iter_mut().zip(&u) {
            *ri -= gamma * ui;
        }
        alpha -= gamma;
        just_dropped = None;
        match event {
            Some((j, true)) => joining = Some(j),
            Some((k, false)) => {
                let j = active.remove(k);
                signs.remove(k);
                b[j] = 0.0;
                is_active[j] = false;
                just_dropped = Some(j);
                if !delete_from_cholesky(&mut chol, p, active.len() + 1, k, &mut scratch) {
                    break;
                }
            }
            None => alpha = alpha_stop,
        }
        knots += 1;
        let (n_nonzero, rss_over_n) = knot(alpha, &b);
        let walk = visit(&Knot {
            alpha,
            coefficients: &b,
            n_nonzero,
            rss_over_n,
        });
        if walk == Walk::Stop || event.is_none() || alpha <= alpha_stop {
            break;
        }
    }
    (b, knots)
}

/// Adds row `j` to the Cholesky factor of `G_AA`; `false` if `j` is collinear with `A`.
fn extend_cholesky(
    gram: &[f64],
    p: usize,
    active: &[usize],
    j: usize,
    chol: &mut [f64],
    scratch: &mut [f64],
) -> bool {
    let a = active.len();
    // Solve L l = G[A, j].
    for (i, &k) in active.iter().enumerate() {
        let mut v = gram[k * p + j];
        for m in 0..i {
            v -= chol[i * p + m] * scratch[m];
        }
        scratch[i] = v / chol[i * p + i];
    }
    let g_jj = gram[j * p + j];
    let d2 = g_jj - scratch[..a].iter().map(|v| v * v).sum::<f64>();
    if d2.is_nan() || d2 <= COLLINEAR * g_jj {
        return false;
    }
    chol[a * p..a * p + a].copy_from_slice(&scratch[..a]);
    chol[a * p + a] = d2.sqrt();
    true
}

/// Removes row and column `k` from the `a × a` Cholesky factor (stride `p`) in O(a²):
/// the rows below `k` shift up and lose column `k`, which leaves a triangular factor of
/// `G_AA` minus the rank-one term of that column; a rank-one Cholesky update with it
/// (rotations) restores the factor. `false` if the result is not positive definite.
fn delete_from_cholesky(chol: &mut [f64], p: usize, a: usize, k: usize, v: &mut [f64]) -> bool {
    for i in k..a - 1 {
        v[i] = chol[(i + 1) * p + k];
        for m in 0..k {
            chol[i * p + m] = chol[(i + 1) * p + m];
        }
        for m in k..=i {
            chol[i * p + m] = chol[(i + 1) * p + m + 1];
        }
    }
    for i in k..a - 1 {
        let l_ii = chol[i * p + i];
        let r = l_ii.hypot(v[i]);
        if r.is_nan() || r <= 0.0 || l_ii == 0.0 {
            return false;
        }
        let (c, s) = (r / l_ii, v[i] / l_ii);
        chol[i * p + i] = r;
        for j in i + 1..a - 1 {
            let l_ji = (chol[j * p + i] + s * v[j]) / c;
            v[j] = c * v[j] - s * l_ji;
            chol[j * p + i] = l_ji;
        }
    }
    true
}

/// Solves `L Lᵀ x = rhs` in place (`L` lower triangular `a × a`, stride `p`).
fn cholesky_solve_in_place(chol: &[f64], p: usize, a: usize, x: &mut [f64]) {
    for i in 0..a {
        let mut v = x[i];
        for m in 0..i {
            v -= chol[i * p + m] * x[m];
        }
        x[i] = v / chol[i * p + i];
    }
    for i in (0..a).rev() {
        let mut v = x[i];
        for m in i + 1..a {
            v -= chol[m * p + i] * x[m];
        }
        x[i] = v / chol[i * p + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthonormal_design_path_is_soft_thresholding_at_every_alpha() {
        let gram = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let xty = vec![0.8, -0.3, 0.05];
        for stop in [0.5, 0.2, 0.1, 0.0] {
            let (b, _) = lasso_path(&gram, &xty, 1.0, stop, 100, |_| Walk::Continue);
            let soft = |z: f64| z.signum() * (z.abs() - stop).max(0.0);
            for (bj, cj) in b.iter().zip(&xty) {
                assert!((bj - soft(*cj)).abs() < 1e-12, "stop {stop}: {b:?}");
            }
        }
    }

    /// KKT conditions of the lasso at `alpha`: |c − G b| <= alpha, with equality and the
    /// sign of b on the support.
    fn assert_kkt(gram: &[f64], xty: &[f64], alpha: f64, b: &[f64]) {
        let p = xty.len();
        for j in 0..p {
            let gb: f64 = (0..p).map(|k| gram[j * p + k] * b[k]).sum();
            let r = xty[j] - gb;
            if b[j] == 0.0 {
                assert!(r.abs() <= alpha + 1e-9, "j {j}: |r| {} > {alpha}", r.abs());
            } else {
                assert!(
                    (r - alpha * b[j].signum()).abs() < 1e-9,
                    "j {j}: r {r} b {}",
                    b[j]
                );
            }
        }
    }

    #[test]
    fn correlated_design_meets_the_kkt_conditions_along_the_path() {
        // A correlated 6-column design (lagged copies of one signal plus noise), where
        // the path has drops as well as joins.
        let n = 60;
        let signal: Vec<f64> = (0..n + 3)
            .map(|t| (t as f64 * 0.7).sin() + 0.3 * (t as f64 * 2.3).cos())
            .collect();
        let x: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                vec![
                    signal[i],
                    signal[i + 1],
                    signal[i + 2],
                    signal[i] + signal[i + 3],
                    ((i * 7 % 11) as f64) / 11.0,
                    (i as f64 * 0.05).cos(),
                ]
            })
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|i| 2.0 * x[i][0] - 1.5 * x[i][1] + 0.4 * x[i][3] + 0.1 * (i as f64).sin())
            .collect();
        let p = 6;
        let nf = n as f64;
        let mean = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>() / nf;
        let means: Vec<f64> = (0..p).map(|j| mean(&|i| x[i][j])).collect();
        let y_mean = mean(&|i| y[i]);
        let mut gram = vec![0.0; p * p];
        let mut xty = vec![0.0; p];
        let mut yty = 0.0;
        for i in 0..n {
            let yi = y[i] - y_mean;
            yty += yi * yi / nf;
            for j in 0..p {
                let xj = x[i][j] - means[j];
                xty[j] += xj * yi / nf;
                for k in 0..p {
                    gram[j * p + k] += xj * (x[i][k] - means[k]) / nf;
                }
            }
        }
        let mut alphas = Vec::new();
        lasso_path(&gram, &xty, yty, 0.0, 200, |knot| {
            alphas.push(knot.alpha);
            Walk::Continue
        });
        assert!(alphas.windows(2).all(|w| w[1] <= w[0]), "{alphas:?}");
        for stop in [alphas[0] * 0.5, alphas[0] * 0.1, alphas[0] * 0.01, 1e-5] {
            let (b, _) = lasso_path(&gram, &xty, yty, stop, 200, |_| Walk::Continue);
            assert_kkt(&gram, &xty, stop, &b);
        }
    }

    #[test]
    fn deleting_from_a_cholesky_factor_matches_refactoring() {
        let p = 5;
        // A symmetric positive definite matrix.
        let mut g = vec![0.0; p * p];
        for i in 0..p {
            for j in 0..p {
                g[i * p + j] =
                    1.0 / (1.0 + (i as f64 - j as f64).abs()) + if i == j { 1.0 } else { 0.0 };
            }
        }
        let all: Vec<usize> = (0..p).collect();
        for k in 0..p {
            let mut chol = vec![0.0; p * p];
            let mut scratch = vec![0.0; p];
            let mut done = Vec::new();
            for &j in &all {
                assert!(extend_cholesky(&g, p, &done, j, &mut chol, &mut scratch));
                done.push(j);
            }
            assert!(delete_from_cholesky(&mut chol, p, p, k, &mut scratch));
            let rest: Vec<usize> = all.iter().copied().filter(|&j| j != k).collect();
            let mut fresh = vec![0.0; p * p];
            let mut done = Vec::new();
            for &j in &rest {
                assert!(extend_cholesky(&g, p, &done, j, &mut fresh, &mut scratch));
                done.push(j);
            }
            for i in 0..p - 1 {
                for m in 0..=i {
                    let (x, y) = (chol[i * p + m], fresh[i * p + m]);
                    assert!((x - y).abs() < 1e-12, "k {k} ({i},{m}): {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn zero_or_constant_inputs_give_zero_coefficients() {
        let (b, knots) = lasso_path(&[0.0], &[0.0], 0.0, 0.0, 10, |_| Walk::Continue);
        assert_eq!((b, knots), (vec![0.0], 0));
        let (b, _) = lasso_path(&[1.0], &[0.5], 1.0, 0.6, 10, |_| Walk::Continue);
        assert_eq!(b, vec![0.0]);
    }
}
