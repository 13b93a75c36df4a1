//! Maximum likelihood by L-BFGS (argmin) over unconstrained parameters: the models fit the
//! logarithms of their positive parameters, and give the negative mean log-likelihood and
//! its analytic gradient.

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// A function to minimise: its value, and its value with its gradient.
pub trait Objective: Sync {
    fn value(&self, x: &[f64]) -> f64;
    fn value_and_gradient(&self, x: &[f64]) -> (f64, Vec<f64>);
}

/// Where the minimiser stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub iterations: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("the optimiser failed: {0}")]
    Failed(String),
    #[error("the optimiser did not converge: {0}")]
    NotConverged(String),
    #[error("the likelihood is not finite at the start")]
    NotFinite,
}

/// The objective, with its last value and gradient: the line search asks for the cost
/// and then the gradient at the same point, and one pass over the data gives both.
struct Problem<'a, O> {
    f: &'a O,
    last: std::sync::Mutex<Option<Evaluated>>,
}

/// A point, the value there and the gradient there.
type Evaluated = (Vec<f64>, f64, Vec<f64>);

impl<O: Objective> Problem<'_, O> {
    fn both(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, v, g)) = last.as_ref()
            && at.as_slice() == x
        {
            return (*v, g.clone());
        }
        let (v, g) = self.f.value_and_gradient(x);
        *last = Some((x.to_vec(), v, g.clone()));
        (v, g)
    }
}

impl<O: Objective> CostFunction for Problem<'_, O> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, x: &Self::Param) -> Result<f64, argmin::core::Error> {
        let v = self.both(x).0;
        // A step into a region where the likelihood overflows is a bad step, not an error.
        Ok(if v.is_finite() { v } else { f64::MAX })
    }
}

impl<O: Objective> Gradient for Problem<'_, O> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, x: &Self::Param) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.both(x).1)
    }
}

/// The gradient of `f` at `x` by central differences (step 10⁻⁶ · (1 + |xᵢ|)): for
/// objectives of a handful of parameters, and to check analytic gradients in tests.
pub fn numeric_gradient<O: Objective + ?Sized>(f: &O, x: &[f64]) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let h = 1e-6 * (1.0 + x[i].abs());
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[i] += h;
            down[i] -= h;
            (f.value(&up) - f.value(&down)) / (2.0 * h)
        })
        .collect()
}

/// Minimises `f` from `start`; stops when the gradient's norm is below `1e-9` or the value
/// no longer changes (relative `1e-15`).
pub fn minimize<O: Objective>(f: &O, start: Vec<f64>) -> Result<Minimum, OptimError> {
    if !f.value(&start).is_finite() {
        return Err(OptimError::NotFinite);
    }
    let fail = |e: argmin::core::Error| OptimError::Failed(e.to_string());
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-9)
        .map_err(fail)?
        .with_tolerance_cost(1e-15)
        .map_err(fail)?;
    let problem = Problem {
        f,
        last: std::sync::Mutex::new(None),
    };
    let res = Executor::new(problem, solver)
        .configure(|state| state.param(start).max_iters(1000))
        .run()
        .map_err(fail)?;
    let state = res.state();
    if matches!(
        state.get_termination_reason(),
        Some(TerminationReason::MaxItersReached)
    ) {
        return Err(OptimError::NotConverged(format!(
            "{} iterations",
            state.get_iter()
        )));
    }
    let x = state
        .get_best_param()
        .cloned()
        .ok_or_else(|| OptimError::Failed("no parameters".into()))?;
    Ok(Minimum {
        value: f.value(&x),
        x,
        iterations: state.get_iter(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rosenbrock;

    impl Objective for Rosenbrock {
        fn value(&self, x: &[f64]) -> f64 {
            (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2)
        }
        fn value_and_gradient(&self, x: &[f64]) -> (f64, Vec<f64>) {
            let g0 = -2.0 * (1.0 - x[0]) - 400.0 * x[0] * (x[1] - x[0] * x[0]);
            let g1 = 200.0 * (x[1] - x[0] * x[0]);
            (self.value(x), vec![g0, g1])
        }
    }

    #[test]
    fn finds_the_minimum_of_rosenbrock() {
        let m = minimize(&Rosenbrock, vec![-1.2, 1.0]).expect("converges");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
    }
}
