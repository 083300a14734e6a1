//! The task graph: who waits for whom, a topological order, and the cycles that prevent one.
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The derived shape of a plan's dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Graph {
    /// For each task, the tasks that list it in `after`, ascending.
    pub dependants: Vec<Vec<usize>>,
    /// Every task once, each after all of its `after` tasks; ties in plan order, so the
    /// order is the same on every run.
    pub order: Vec<usize>,
}

/// Builds the graph from each task's `after` list (indices, no self-edges). On cycles,
/// returns each cycle found as a closed walk of indices along `after` edges: `[a, b, a]`
/// means a waits for b, which waits for a.
pub(crate) fn build(after: &[Vec<usize>]) -> Result<Graph, Vec<Vec<usize>>> {
    let n = after.len();
    let mut dependants = vec![Vec::new(); n];
    let mut waiting = vec![0usize; n];
    for (task, deps) in after.iter().enumerate() {
        for &dep in deps {
            dependants[dep].push(task);
            waiting[task] += 1;
        }
    }
    for list in &mut dependants {
        list.sort_unstable();
        list.dedup();
    }
    // Kahn's algorithm with a min-heap: among tasks whose dependencies are done, the one
    // earliest in the plan comes first.
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(task)) = ready.pop() {
        order.push(task);
        for &d in &dependants[task] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    if order.len() == n {
        return Ok(Graph { dependants, order });
    }
    Err(cycles(after, &waiting))
}

/// Finds cycles among the tasks Kahn's algorithm could not order (`waiting > 0`). Each such
/// task waits for at least one other such task, so following `after` edges from any of them
/// must come back to a task already on the path: that loop is a cycle. Tasks that only wait
/// on a cycle are not cycles themselves and are not reported.
fn cycles(after: &[Vec<usize>], waiting: &[usize]) -> Vec<Vec<usize>> {
    let stuck = |t: usize| waiting[t] > 0;
    let mut seen = vec![false; after.len()];
    let mut found = Vec::new();
    for start in (0..after.len()).filter(|&t| stuck(t)) {
        if seen[start] {
            continue;
        }
        let mut path = vec![start];
        let mut on_path = vec![None; after.len()];
        on_path[start] = Some(0);
        let mut current = start;
        loop {
            seen[current] = true;
            // The smallest stuck dependency, for a deterministic report.
            let Some(next) = after[current].iter().copied().filter(|&d| stuck(d)).min() else {
                break;
            };
            if let Some(pos) = on_path[next] {
                let mut cycle = path[pos..].to_vec();
                cycle.push(next);
                found.push(cycle);
                break;
            }
            if seen[next] {
                break; // leads into a part already explored
            }
            on_path[next] = Some(path.len());
            path.push(next);
            current = next;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_dependencies_first_and_ties_in_plan_order() {
        // 0 after 2, 1 free, 2 free, 3 after 0 and 1
        let g = build(&[vec![2], vec![], vec![], vec![0, 1]]).unwrap();
        assert_eq!(g.order, vec![1, 2, 0, 3]);
        assert_eq!(g.dependants, vec![vec![3], vec![3], vec![0], vec![]]);
    }

    #[test]
    fn reports_a_two_cycle_once() {
        let err = build(&[vec![1], vec![0], vec![1]]).unwrap_err();
        assert_eq!(err, vec![vec![0, 1, 0]]);
    }

    #[test]
    fn reports_separate_cycles() {
        // 0 → 1 → 2 → 0 and 3 → 4 → 3, 5 waits on the first
        let err = build(&[vec![1], vec![2], vec![0], vec![4], vec![3], vec![2]]).unwrap_err();
        assert_eq!(err, vec![vec![0, 1, 2, 0], vec![3, 4, 3]]);
    }
}
