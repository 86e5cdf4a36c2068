//! Work on several disks at once: one scoped thread per item.

use anyhow::Result;

/// Runs `f` on every item in its own thread and returns the results in
/// the items' order; the first error (in that order) wins. Every thread
/// finishes before this returns.
pub fn each<I, T, F>(items: &[I], what: &str, f: F) -> Result<Vec<T>>
where
    I: Sync,
    T: Send,
    F: Fn(&I) -> Result<T> + Sync,
{
    std::thread::scope(|sc| {
        let f = &f;
        let threads: Vec<_> = items.iter().map(|i| sc.spawn(move || f(i))).collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread {what} panicked")))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_and_the_first_error_wins() {
        let v = each(&[3u64, 1, 2], "sleeping", |&n| {
            std::thread::sleep(std::time::Duration::from_millis(n * 20));
            Ok(n * 10)
        })
        .unwrap();
        assert_eq!(v, vec![30, 10, 20]);
        let e = each(&[1, 2, 3], "failing", |&n| {
            if n >= 2 {
                anyhow::bail!("item {n}")
            }
            Ok(n)
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "item 2");
        let p = each(&[1], "panicking", |_| -> Result<()> { panic!("boom") }).unwrap_err();
        assert_eq!(p.to_string(), "a thread panicking panicked");
    }
}
