use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Counts its units; each takes `each`, and stops early when cancelled if
/// `polite`.
struct Counter {
    runs: Arc<AtomicUsize>,
    each: Duration,
    polite: bool,
    fail: bool,
}

#[async_trait::async_trait]
impl Worker for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    async fn work(&mut self, cancel: &CancellationToken) -> anyhow::Result<WorkerState> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.polite {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(self.each) => {}
            }
        } else {
            tokio::time::sleep(self.each).await;
        }
        if self.fail {
            anyhow::bail!("it broke");
        }
        Ok(WorkerState::Busy)
    }

    async fn wait_for_work(&mut self) {}
}

fn counter(each: Duration, polite: bool, fail: bool) -> (Box<dyn Worker>, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    (Box::new(Counter { runs: runs.clone(), each, polite, fail }), runs)
}

#[tokio::test]
async fn a_worker_that_sees_the_cancellation_stops_at_once() {
    let mut r = Runner::new();
    let (w, runs) = counter(Duration::from_secs(3600), true, false);
    r.spawn(w);
    let board = r.board();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(board.snapshot()[0].state, "busy");
    let started = Instant::now();
    assert!(r.shutdown(Duration::from_secs(30)).await, "stopped in time");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(board.snapshot()[0].state, "stopped");
}

#[tokio::test]
async fn a_worker_that_does_not_stop_is_cut_off_at_the_deadline() {
    let mut r = Runner::new();
    let (w, _) = counter(Duration::from_secs(3600), false, false);
    r.spawn(w);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert!(!r.shutdown(Duration::from_millis(200)).await, "reported as cut short");
    assert!(started.elapsed() < Duration::from_secs(20), "shutdown waited past its deadline");
}

#[tokio::test]
async fn busy_workers_run_again_and_failures_are_recorded() {
    let mut r = Runner::new();
    let (w, runs) = counter(Duration::from_millis(1), true, false);
    r.spawn(w);
    let (f, failed) = counter(Duration::ZERO, true, true);
    r.spawn(f);
    let board = r.board();
    // Bounded: the busy worker runs again and again without waiting. The
    // board counts a run when it has ended, after the worker's own count.
    for _ in 0..500 {
        let s = board.snapshot();
        if s[0].runs >= 5 && s[1].failures == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(runs.load(Ordering::SeqCst) >= 5);
    r.cancel();
    let s = board.snapshot();
    assert_eq!(failed.load(Ordering::SeqCst), 1, "a failure pauses the worker");
    assert_eq!((s[1].failures, s[1].last_error.as_deref()), (1, Some("it broke")));
    assert!(s[0].runs >= 5 && s[0].last_started_at.is_some() && s[0].last_duration_ms.is_some());
    assert!(r.shutdown(Duration::from_secs(30)).await);
}

#[tokio::test]
async fn periodic_work_waits_for_its_time_and_says_when() {
    let runs = Arc::new(AtomicUsize::new(0));
    let n = runs.clone();
    let p = Periodic::new("tick", Duration::from_millis(1), Duration::from_secs(3600), move |_| {
        let n = n.clone();
        async move {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let mut r = Runner::new();
    r.spawn(Box::new(p));
    let board = r.board();
    for _ in 0..500 {
        if board.snapshot()[0].runs == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = &board.snapshot()[0];
    assert_eq!((s.runs, runs.load(Ordering::SeqCst)), (1, 1), "once, then not before the interval");
    assert!(s.next_run_at.is_some_and(|t| t > now_millis() + 3_000_000), "{s:?}");
    assert!(r.shutdown(Duration::from_secs(30)).await);
}
