//! The dependency graph of services: edges from `depends-on` and from FROM lines that name
//! another service's image. Validated (unknown names, cycles) before any work.

use std::collections::{BTreeMap, BTreeSet};

/// Services by index, with the indices each one depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub names: Vec<String>,
    /// `deps[i]`: the services `i` needs built first (sorted, no duplicates, no self-edges).
    pub deps: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error(
        "service {service:?} depends on {missing:?}, which is not a service; known services: {known}"
    )]
    UnknownDependency {
        service: String,
        missing: String,
        known: String,
    },
    #[error("dependency cycle: {}; remove one of these depends-on entries or FROM references", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
}

impl Graph {
    /// Builds the graph from `(service, dependency names)`; a dependency on itself is ignored.
    pub fn new(services: &[(String, Vec<String>)]) -> Result<Graph, GraphError> {
        let names: Vec<String> = services.iter().map(|(n, _)| n.clone()).collect();
        let index: BTreeMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut deps = Vec::with_capacity(services.len());
        for (name, wanted) in services {
            let mut mine = BTreeSet::new();
            for dep in wanted {
                let &d = index
                    .get(dep.as_str())
                    .ok_or_else(|| GraphError::UnknownDependency {
                        service: name.clone(),
                        missing: dep.clone(),
                        known: names.join(", "),
                    })?;
                if dep != name {
                    mine.insert(d);
                }
            }
            deps.push(mine.into_iter().collect());
        }
        let graph = Graph { names, deps };
        graph.check_acyclic()?;
        Ok(graph)
    }

    /// A cycle, named in order, if there is one (depth-first search with colours).
    fn check_acyclic(&self) -> Result<(), GraphError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut marks = vec![Mark::New; self.names.len()];
        for start in 0..self.names.len() {
            if marks[start] != Mark::New {
                continue;
            }
            // Iterative DFS: (node, next dependency to visit).
            let mut stack = vec![(start, 0usize)];
            marks[start] = Mark::Active;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&dep) = self.deps[node].get(*next) {
                    *next += 1;
                    match marks[dep] {
                        Mark::New => {
                            marks[dep] = Mark::Active;
                            stack.push((dep, 0));
                        }
                        Mark::Active => {
                            let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                            let mut cycle: Vec<String> = stack[from..]
                                .iter()
                                .map(|(n, _)| self.names[*n].clone())
                                .collect();
                            cycle.push(self.names[dep].clone());
                            return Err(GraphError::Cycle { cycle });
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// Everything `roots` need, transitively, including the roots.
    pub fn closure(&self, roots: &[usize]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<usize> = roots.to_vec();
        while let Some(n) = todo.pop() {
            if seen.insert(n) {
                todo.extend(&self.deps[n]);
            }
        }
        seen
    }

    /// The services that depend on `n`, transitively.
    pub fn dependants(&self, n: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut changed = true;
        while changed {
            changed = false;
            for (i, deps) in self.deps.iter().enumerate() {
                if !out.contains(&i) && deps.iter().any(|d| *d == n || out.contains(d)) {
                    out.insert(i);
                    changed = true;
                }
            }
        }
        out
    }

    /// A topological order (dependencies first; ties by name order), for display.
    pub fn order(&self) -> Vec<usize> {
        let mut done = vec![false; self.names.len()];
        let mut order = Vec::with_capacity(self.names.len());
        while order.len() < self.names.len() {
            let before = order.len();
            for i in 0..self.names.len() {
                if !done[i] && self.deps[i].iter().all(|d| done[*d]) {
                    done[i] = true;
                    order.push(i);
                }
            }
            if order.len() == before {
                break; // unreachable for a validated graph
            }
        }
        order
    }

    /// Chains: the connected groups of services (for sharding, each stays in one shard).
    pub fn components(&self) -> Vec<Vec<usize>> {
        let n = self.names.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], x: usize) -> usize {
            let mut r = x;
            while p[r] != r {
                r = p[r];
            }
            p[x] = r;
            r
        }
        for (i, deps) in self.deps.iter().enumerate() {
            for &d in deps {
                let (a, b) = (find(&mut parent, i), find(&mut parent, d));
                parent[a] = b;
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
        groups.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, &[&str])]) -> Result<Graph, GraphError> {
        let services: Vec<(String, Vec<String>)> = edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect();
        Graph::new(&services)
    }

    #[test]
    fn dependencies_come_first_in_the_order() {
        let graph = g(&[
            ("backend-init", &["backend"]),
            ("backend", &["base"]),
            ("base", &[]),
            ("web", &[]),
        ])
        .unwrap();
        let order: Vec<&str> = graph
            .order()
            .iter()
            .map(|i| graph.names[*i].as_str())
            .collect();
        let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
        assert!(pos("base") < pos("backend") && pos("backend") < pos("backend-init"));
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn unknown_dependencies_name_the_service_and_the_known_ones() {
        let err = g(&[("api", &["dbb"]), ("db", &[])]).unwrap_err();
        assert_eq!(
            err,
            GraphError::UnknownDependency {
                service: "api".into(),
                missing: "dbb".into(),
                known: "api, db".into()
            }
        );
        assert!(err.to_string().contains("\"dbb\""));
    }

    #[test]
    fn cycles_are_named_in_order() {
        let err = g(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]).unwrap_err();
        let GraphError::Cycle { cycle } = &err else {
            panic!("{err}")
        };
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        assert!(err.to_string().contains("a -> b -> c -> a"), "{err}");
    }

    #[test]
    fn self_dependencies_are_ignored() {
        let graph = g(&[("a", &["a"])]).unwrap();
        assert!(graph.deps[0].is_empty());
    }

    #[test]
    fn closure_and_dependants_follow_edges_transitively() {
        let graph = g(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]).unwrap();
        assert_eq!(graph.closure(&[2]), BTreeSet::from([0, 1, 2]));
        assert_eq!(graph.dependants(0), BTreeSet::from([1, 2]));
        assert!(graph.dependants(3).is_empty());
        assert_eq!(graph.components(), vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn a_long_chain_does_not_overflow() {
        let names: Vec<String> = (0..5000).map(|i| format!("s{i}")).collect();
        let services: Vec<(String, Vec<String>)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    if i > 0 {
                        vec![names[i - 1].clone()]
                    } else {
                        vec![]
                    },
                )
            })
            .collect();
        let graph = Graph::new(&services).unwrap();
        assert_eq!(graph.order().len(), 5000);
    }
}
