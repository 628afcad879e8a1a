//! DAG-aware greedy extraction.
//!
//! Each class picks one candidate; a candidate may charge an item (a kernel) and needs
//! its children. A choice's cost is the sum over the *set* of items it transitively
//! needs, so an item that several choices share (a merged convolution read by two
//! slices, a multi-output kernel serving two classes) counts once, not once per user
//! as a tree cost would. Classes are re-evaluated from a worklist until nothing
//! improves: a class's best set only ever gets cheaper, so this ends, and a cap on
//! evaluations bounds it anyway.
//!
//! Greedy choices are local, so a kernel that would serve two classes at once loses to
//! two cheaper single-class choices even when it is cheaper than both together. A
//! second pass therefore tries switching several classes at once, and keeps a switch
//! when the whole plan (everything the roots need) gets cheaper and stays acyclic: all
//! classes that can take one item (a multi-output kernel), and all classes that can
//! take a free view of one class (the slices of a merged convolution).

use std::collections::VecDeque;
use std::rc::Rc;

/// One way to compute a class.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The item it charges (`None` for free choices: views, constants, leaves).
    pub item: Option<u32>,
    /// The classes it reads.
    pub children: Vec<usize>,
}

/// Classes with their candidates, and the cost of every item.
#[derive(Clone, Debug, Default)]
pub struct Problem {
    pub candidates: Vec<Vec<Candidate>>,
    pub item_cost: Vec<f64>,
}

#[derive(Clone)]
struct Best {
    cost: f64,
    items: Rc<[u32]>,
    choice: usize,
}

/// The chosen candidate of every class that can be computed at all, optimized for the
/// plan that computes `roots`.
pub fn solve(problem: &Problem, roots: &[usize]) -> Vec<Option<usize>> {
    let mut choice = greedy(problem);
    share(problem, roots, &mut choice);
    choice
}

fn greedy(problem: &Problem) -> Vec<Option<usize>> {
    let n = problem.candidates.len();
    let mut parents: Vec<Vec<usize>> = vec![vec![]; n];
    for (c, cands) in problem.candidates.iter().enumerate() {
        for cand in cands {
            for &ch in &cand.children {
                parents[ch].push(c);
            }
        }
    }
    parents.iter_mut().for_each(|p| p.dedup());
    let mut best: Vec<Option<Best>> = vec![None; n];
    let mut queue: VecDeque<usize> = (0..n).collect();
    let mut queued = vec![true; n];
    let mut budget = 64 * n + 1024;
    while let Some(c) = queue.pop_front() {
        queued[c] = false;
        if budget == 0 {
            break;
        }
        budget -= 1;
        let Some(found) = evaluate(problem, &best, c) else {
            continue;
        };
        let improves = best[c]
            .as_ref()
            .is_none_or(|b| found.cost < b.cost * (1.0 - 1e-12));
        if improves {
            best[c] = Some(found);
            for &p in &parents[c] {
                if !queued[p] {
                    queued[p] = true;
                    queue.push_back(p);
                }
            }
        }
    }
    best.into_iter().map(|b| b.map(|b| b.choice)).collect()
}

/// Switches classes to shared items where that makes the whole plan cheaper.
fn share(problem: &Problem, roots: &[usize], choice: &mut [Option<usize>]) {
    let mut users: Vec<Vec<(usize, usize)>> = vec![vec![]; problem.item_cost.len()];
    let mut viewers: Vec<Vec<(usize, usize)>> = vec![vec![]; problem.candidates.len()];
    for (c, cands) in problem.candidates.iter().enumerate() {
        for (k, cand) in cands.iter().enumerate() {
            match cand.item {
                Some(i) if problem.item_cost[i as usize] > 0.0 => users[i as usize].push((c, k)),
                _ if cand.children.len() == 1 => viewers[cand.children[0]].push((c, k)),
                _ => {}
            }
        }
    }
    users.extend(viewers);
    let Some(mut current) = plan_cost(problem, roots, choice) else {
        return;
    };
    for _round in 0..2 {
        let mut improved = false;
        for takers in users.iter().filter(|u| u.len() > 1) {
            let saved: Vec<(usize, Option<usize>)> =
                takers.iter().map(|&(c, _)| (c, choice[c])).collect();
            for &(c, k) in takers {
                if choice[c].is_some() {
                    choice[c] = Some(k);
                }
            }
            match plan_cost(problem, roots, choice) {
                Some(cost) if cost < current * (1.0 - 1e-9) => {
                    current = cost;
                    improved = true;
                }
                _ => saved.into_iter().for_each(|(c, k)| choice[c] = k),
            }
        }
        if !improved {
            break;
        }
    }
}

/// The cost of everything `roots` need under `choice`; `None` if some needed class has
/// no choice or the choices form a cycle.
fn plan_cost(problem: &Problem, roots: &[usize], choice: &[Option<usize>]) -> Option<f64> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; problem.candidates.len()];
    let mut charged = vec![false; problem.item_cost.len()];
    let mut cost = 0.0;
    // Iterative depth-first search; a class reached again while open is a cycle.
    let mut stack: Vec<(usize, usize)> = roots.iter().map(|&r| (r, 0)).collect();
    while let Some(&(c, next)) = stack.last() {
        let cand = &problem.candidates[c][choice[c]?];
        if next == 0 {
            match mark[c] {
                Mark::Done => {
                    stack.pop();
                    continue;
                }
                Mark::Open => return None,
                Mark::New => mark[c] = Mark::Open,
            }
            if let Some(i) = cand.item {
                if !std::mem::replace(&mut charged[i as usize], true) {
                    cost += problem.item_cost[i as usize];
                }
            }
        }
        let top = stack.len() - 1;
        if next < cand.children.len() {
            stack[top].1 += 1;
            let ch = cand.children[next];
            match mark[ch] {
                Mark::Open => return None,
                Mark::Done => {}
                Mark::New => stack.push((ch, 0)),
            }
        } else {
            mark[c] = Mark::Done;
            stack.pop();
        }
    }
    Some(cost)
}

/// The cheapest candidate of class `c` given its children's current bests.
fn evaluate(problem: &Problem, best: &[Option<Best>], c: usize) -> Option<Best> {
    let mut winner: Option<Best> = None;
    'candidates: for (k, cand) in problem.candidates[c].iter().enumerate() {
        let mut items: Vec<u32> = cand.item.into_iter().collect();
        for &ch in &cand.children {
            if ch == c {
                continue 'candidates;
            }
            match &best[ch] {
                Some(b) => items.extend_from_slice(&b.items),
                None => continue 'candidates,
            }
        }
        items.sort_unstable();
        items.dedup();
        let cost: f64 = items.iter().map(|&i| problem.item_cost[i as usize]).sum();
        if winner.as_ref().is_none_or(|w| cost < w.cost) {
            winner = Some(Best {
                cost,
                items: items.into(),
                choice: k,
            });
        }
    }
    winner
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(item: Option<u32>, children: &[usize]) -> Candidate {
        Candidate {
            item,
            children: children.to_vec(),
        }
    }

    #[test]
    fn a_shared_item_counts_once() {
        // Classes 1 and 2 can each be computed alone (cost 3 each) or as outputs of one
        // shared kernel (cost 5); class 0 needs both. A tree cost would price the shared
        // kernel twice (10 > 6); the set cost prices it once (5 < 6).
        let problem = Problem {
            candidates: vec![
                vec![cand(Some(3), &[1, 2])],
                vec![cand(Some(0), &[]), cand(Some(2), &[])],
                vec![cand(Some(1), &[]), cand(Some(2), &[])],
            ],
            item_cost: vec![3.0, 3.0, 5.0, 1.0],
        };
        assert_eq!(solve(&problem, &[0]), vec![Some(0), Some(1), Some(1)]);
    }

    #[test]
    fn cycles_and_unreachable_classes_are_tolerated() {
        // Class 0 is only computable through itself; class 1 through 0.
        let problem = Problem {
            candidates: vec![
                vec![cand(Some(0), &[0])],
                vec![cand(None, &[0])],
                vec![cand(None, &[])],
            ],
            item_cost: vec![1.0],
        };
        assert_eq!(solve(&problem, &[1, 2]), vec![None, None, Some(0)]);
    }
}
