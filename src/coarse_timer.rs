//! Coarse timers for the connection timeouts that need no precision: idle keep-alive, head and
//! body reads, a client that stops reading, the drain grace, and the start of the client watch.
//!
//! Each connection owns one slot in its worker's table: a deadline, a fired flag and a waker,
//! about 40 bytes. The worker's housekeeping tick (every 250 ms) fires the slots whose deadline
//! has passed, so a timeout ends between its deadline and one tick later. Setting a deadline is
//! two stores, with no timer wheel to update and no clock read beyond the caller's own.
//!
//! monoio's `Sleep` is 640 bytes aligned to 128 and needs a wheel update on every reset; with one
//! per connection it was the largest single item of an idle connection's memory
//! (docs/benchmarks.md). Deadlines that need precision, a call's `grpc-timeout`, still use one.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// One worker's coarse timers.
#[derive(Default)]
pub struct CoarseTimers {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
}

#[derive(Default)]
struct Slot {
    deadline: Option<Instant>,
    fired: bool,
    waker: Option<Waker>,
}

impl CoarseTimers {
    /// A timer with a slot of its own, unset; the slot is reused once the timer drops.
    pub fn timer(self: &Rc<Self>) -> CoarseTimer {
        let reused = self.free.borrow_mut().pop();
        let index = reused.unwrap_or_else(|| {
            let mut slots = self.slots.borrow_mut();
            slots.push(Slot::default());
            slots.len() - 1
        });
        CoarseTimer {
            timers: self.clone(),
            index,
        }
    }

    /// Fire every timer whose deadline is at or before `now`; returns how many fired.
    pub fn fire_expired(&self, now: Instant) -> usize {
        let mut fired = 0;
        for slot in self.slots.borrow_mut().iter_mut() {
            if !slot.fired && slot.deadline.is_some_and(|deadline| deadline <= now) {
                slot.fired = true;
                fired += 1;
                // monoio's wake only queues the task: nothing runs while the table is borrowed.
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
        fired
    }

    /// Timers that exist.
    #[cfg(test)]
    fn live(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }
}

/// A connection's coarse timer. Each wait sets its own deadline first, so one timer serves every
/// wait of the connection in turn.
pub struct CoarseTimer {
    timers: Rc<CoarseTimers>,
    index: usize,
}

impl CoarseTimer {
    /// Resolve once the housekeeping tick finds `deadline` passed.
    pub async fn at(&mut self, deadline: Instant) {
        self.set(deadline);
        poll_fn(|cx| self.poll_fired(cx)).await
    }

    fn set(&self, deadline: Instant) {
        let mut slots = self.timers.slots.borrow_mut();
        let slot = &mut slots[self.index];
        slot.deadline = Some(deadline);
        slot.fired = false;
    }

    fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.timers.slots.borrow_mut();
        let slot = &mut slots[self.index];
        if slot.fired {
            return Poll::Ready(());
        }
        match &slot.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for CoarseTimer {
    fn drop(&mut self) {
        self.timers.slots.borrow_mut()[self.index] = Slot::default();
        self.timers.free.borrow_mut().push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll_once(future: std::pin::Pin<&mut impl Future<Output = ()>>, waker: &Waker) -> bool {
        future.poll(&mut Context::from_waker(waker)).is_ready()
    }

    #[test]
    fn fires_only_after_the_deadline_and_wakes_the_waiter() {
        let timers = Rc::new(CoarseTimers::default());
        let mut timer = timers.timer();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let start = Instant::now();
        let deadline = start + Duration::from_secs(1);
        let mut wait = pin!(timer.at(deadline));
        assert!(!poll_once(wait.as_mut(), &waker));

        assert_eq!(timers.fire_expired(start), 0, "not yet due");
        assert!(!poll_once(wait.as_mut(), &waker));
        assert_eq!(counter.0.load(Ordering::Relaxed), 0);

        assert_eq!(timers.fire_expired(deadline), 1);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1, "the waiter was woken");
        assert!(poll_once(wait.as_mut(), &waker));
        assert_eq!(timers.fire_expired(deadline), 0, "fires once");
    }

    #[test]
    fn a_new_deadline_rearms_a_fired_timer() {
        let timers = Rc::new(CoarseTimers::default());
        let mut timer = timers.timer();
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let start = Instant::now();
        {
            let mut wait = pin!(timer.at(start));
            assert!(!poll_once(wait.as_mut(), &waker));
            timers.fire_expired(start);
            assert!(poll_once(wait.as_mut(), &waker));
        }
        let later = start + Duration::from_secs(5);
        let mut wait = pin!(timer.at(later));
        assert!(
            !poll_once(wait.as_mut(), &waker),
            "re-armed, not still fired"
        );
        timers.fire_expired(start + Duration::from_secs(1));
        assert!(!poll_once(wait.as_mut(), &waker));
        timers.fire_expired(later);
        assert!(poll_once(wait.as_mut(), &waker));
    }

    #[test]
    fn dropped_timers_give_their_slot_back() {
        let timers = Rc::new(CoarseTimers::default());
        let a = timers.timer();
        let b = timers.timer();
        assert_eq!(timers.live(), 2);
        drop(a);
        assert_eq!(timers.live(), 1);
        let c = timers.timer();
        assert_eq!(timers.live(), 2);
        assert_eq!(timers.slots.borrow().len(), 2, "the freed slot was reused");
        drop((b, c));
        assert_eq!(timers.live(), 0);
    }

    #[test]
    fn an_unset_timer_never_fires() {
        let timers = Rc::new(CoarseTimers::default());
        let _timer = timers.timer();
        assert_eq!(
            timers.fire_expired(Instant::now() + Duration::from_secs(3600)),
            0
        );
    }
}
