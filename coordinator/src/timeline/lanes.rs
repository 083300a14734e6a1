//! The two pure computations of a timeline: which slot lane each execution goes in, and
//! the DAG's critical path.
//!
//! A sidecar does not say which of its slots ran an execution (slots are a count, not
//! places), so lanes are assigned like a person would draw them: each execution, in start
//! order, goes into the lowest lane of its sidecar that is free by then. That needs as
//! many lanes as the sidecar ever ran executions of this run at once.

/// Lane per interval: `intervals` are (start, end) in start order; returns each one's
/// lane (0-based) and the number of lanes used. An interval may start where another ends.
pub fn assign(intervals: &[(i64, i64)]) -> (Vec<usize>, usize) {
    let mut free_at: Vec<i64> = Vec::new();
    let lanes = intervals
        .iter()
        .map(|&(start, end)| {
            let lane = match free_at.iter().position(|&f| f <= start) {
                Some(lane) => lane,
                None => {
                    free_at.push(i64::MIN);
                    free_at.len() - 1
                }
            };
            free_at[lane] = end.max(start);
            lane
        })
        .collect();
    (lanes, free_at.len())
}

/// The longest chain of `work` through the dependencies: task indices first to last, and
/// its length. `after[i]` are the tasks `i` waits for; `order` is a topological order.
/// Ties go to the task that comes first in the plan, so the answer is stable.
pub fn critical_path(work: &[i64], after: &[Vec<usize>], order: &[usize]) -> (Vec<usize>, i64) {
    let n = work.len();
    // finish[i]: the longest chain ending with i; via[i]: its previous task.
    let mut finish = vec![0i64; n];
    let mut via: Vec<Option<usize>> = vec![None; n];
    for &i in order {
        let before = after[i]
            .iter()
            .copied()
            .max_by_key(|&d| (finish[d], std::cmp::Reverse(d)));
        finish[i] = work[i] + before.map_or(0, |d| finish[d]);
        via[i] = before;
    }
    let Some(last) = (0..n).max_by_key(|&i| (finish[i], std::cmp::Reverse(i))) else {
        return (Vec::new(), 0);
    };
    if finish[last] == 0 {
        return (Vec::new(), 0);
    }
    let mut path = vec![last];
    while let Some(prev) = via[*path.last().unwrap_or(&last)] {
        path.push(prev);
    }
    path.reverse();
    (path, finish[last])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_reuse_the_lowest_free_slot() {
        // a [0,10) b [2,5) c [5,8) d [6,12): b ends before c starts, so c takes b's lane.
        let (lanes, count) = assign(&[(0, 10), (2, 5), (5, 8), (6, 12)]);
        assert_eq!(lanes, vec![0, 1, 1, 2]);
        assert_eq!(count, 3);
    }

    #[test]
    fn no_intervals_no_lanes() {
        assert_eq!(assign(&[]), (vec![], 0));
    }

    #[test]
    fn critical_path_follows_the_longest_chain() {
        // 0 -> 1 -> 3, 0 -> 2 -> 3; 2 is longer than 1.
        let work = [5, 1, 7, 2];
        let after = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let (path, len) = critical_path(&work, &after, &[0, 1, 2, 3]);
        assert_eq!(path, vec![0, 2, 3]);
        assert_eq!(len, 14);
    }

    #[test]
    fn a_lone_long_task_is_its_own_critical_path() {
        let work = [3, 20, 4];
        let after = vec![vec![], vec![], vec![0]];
        let (path, len) = critical_path(&work, &after, &[0, 1, 2]);
        assert_eq!(path, vec![1]);
        assert_eq!(len, 20);
    }

    #[test]
    fn nothing_ran_no_path() {
        assert_eq!(
            critical_path(&[0, 0], &[vec![], vec![0]], &[0, 1]),
            (vec![], 0)
        );
    }
}
