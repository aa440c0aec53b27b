//! One circuit breaker.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// When a breaker trips and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// The sliding window: the outcomes of the last `window` calls.
    pub window: u32,
    /// The failure rate only counts once the window holds this many calls (so a value above
    /// `window` turns the rate rule off).
    pub min_calls: u32,
    /// Trip when the window's failure rate reaches this (0.0 to 1.0).
    pub failure_rate: f64,
    /// Trip after this many failures in a row, whatever the rate.
    pub consecutive_failures: u32,
    /// How long the first trip stays open.
    pub open_wait: Duration,
    /// The longest open wait: the wait doubles on each trip that follows a failed probe, and a
    /// `Retry-After` is capped by it too.
    pub max_open_wait: Duration,
    /// How many probe calls half-open lets through at once.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    /// Window 20, at least 10 calls, 50 % failures or 5 in a row; open 30 s, doubling to 10 min;
    /// one probe.
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            min_calls: 10,
            failure_rate: 0.5,
            consecutive_failures: 5,
            open_wait: Duration::from_secs(30),
            max_open_wait: Duration::from_secs(600),
            half_open_probes: 1,
        }
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls fail fast until the wait is over.
    Open,
    /// A few probe calls go through; a success closes, a failure opens again.
    HalfOpen,
}

impl State {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The call was refused because the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    /// When a probe may be let through, from now.
    pub retry_in: Duration,
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit open; retry in {} ms", self.retry_in.as_millis())
    }
}

impl std::error::Error for CircuitOpen {}

/// A breaker's state and counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// Calls in the window.
    pub calls: u32,
    /// Failures in the window.
    pub failures: u32,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Trips since the breaker last closed.
    pub trips: u32,
    /// While open, how long until a probe is allowed.
    pub retry_in: Option<Duration>,
}

type Listener = Box<dyn Fn(State, State) + Send + Sync>;

#[derive(Debug)]
struct Inner {
    state: State,
    window: VecDeque<bool>,
    failures: u32,
    consecutive: u32,
    trips: u32,
    open_until: Instant,
    probes_in_flight: u32,
    last_used: Instant,
    /// Bumped on every state change: a permit from an older epoch reports into a state that no
    /// longer exists, so its outcome (and its probe slot) is ignored.
    epoch: u64,
}

/// A circuit breaker: closed, open, half-open.
///
/// Ask with [`CircuitBreaker::try_acquire`] before a call and report the outcome on the
/// returned [`Permit`]. The lock is held only to update a few counters: no allocation, no
/// await, so many tasks can ask at once.
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    listener: Option<Listener>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// Permission to make one call. Report how it went with [`Permit::success`] or
/// [`Permit::failure`]; dropping it unreported counts as neither (and frees a probe slot).
#[must_use = "report the call's outcome on the permit"]
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    epoch: u64,
    probe: bool,
    reported: bool,
}

impl Permit {
    /// The call succeeded.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(self.epoch, true, self.probe, None);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(self.epoch, false, self.probe, None);
    }

    /// The call failed and the target asked to wait (`Retry-After`): the breaker opens at once,
    /// and stays open exactly that long (capped by `max_open_wait`) instead of its own wait.
    pub fn failure_with_retry_after(mut self, retry_after: Duration) {
        self.reported = true;
        self.breaker
            .record(self.epoch, false, self.probe, Some(retry_after));
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            let mut inner = self.breaker.inner.lock();
            if inner.epoch == self.epoch {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            }
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::with_listener(config, None)
    }

    pub(crate) fn with_listener(
        config: BreakerConfig,
        listener: Option<Listener>,
    ) -> CircuitBreaker {
        let now = Instant::now();
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                window: VecDeque::with_capacity(config.window.max(1) as usize),
                failures: 0,
                consecutive: 0,
                trips: 0,
                open_until: now,
                probes_in_flight: 0,
                last_used: now,
                epoch: 0,
            }),
            listener,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Asks to make a call.
    ///
    /// # Errors
    ///
    /// [`CircuitOpen`] while the breaker is open (or half-open with every probe slot taken),
    /// saying when to ask again.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, CircuitOpen> {
        let now = Instant::now();
        let mut change = None;
        let (probe, epoch) = {
            let mut inner = self.inner.lock();
            inner.last_used = now;
            let probe = match inner.state {
                State::Closed => false,
                State::Open if now < inner.open_until => {
                    return Err(CircuitOpen {
                        retry_in: inner.open_until - now,
                    });
                }
                State::Open => {
                    inner.state = State::HalfOpen;
                    inner.epoch = inner.epoch.wrapping_add(1);
                    inner.probes_in_flight = 1;
                    change = Some((State::Open, State::HalfOpen));
                    true
                }
                State::HalfOpen if inner.probes_in_flight < self.config.half_open_probes.max(1) => {
                    inner.probes_in_flight += 1;
                    true
                }
                State::HalfOpen => {
                    // Probes are out; ask again soon rather than piling on.
                    return Err(CircuitOpen {
                        retry_in: self.config.open_wait.min(Duration::from_secs(1)),
                    });
                }
            };
            (probe, inner.epoch)
        };
        self.notify(change);
        Ok(Permit {
            breaker: self.clone(),
            epoch,
            probe,
            reported: false,
        })
    }

    /// The state now (an open breaker whose wait is over still reads `Open` until asked).
    pub fn state(&self) -> State {
        self.inner.lock().state
    }

    /// While open, how long until a probe is allowed; `None` otherwise.
    pub fn retry_in(&self) -> Option<Duration> {
        let inner = self.inner.lock();
        let now = Instant::now();
        (inner.state == State::Open && now < inner.open_until).then(|| inner.open_until - now)
    }

    /// State and counts.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.inner.lock();
        let now = Instant::now();
        Snapshot {
            state: inner.state,
            calls: inner.window.len() as u32,
            failures: inner.failures,
            consecutive_failures: inner.consecutive,
            trips: inner.trips,
            retry_in: (inner.state == State::Open && now < inner.open_until)
                .then(|| inner.open_until - now),
        }
    }

    /// Time since the breaker was last asked, and whether it is closed (for eviction).
    pub(crate) fn idle_and_closed(&self, now: Instant) -> (Duration, bool) {
        let inner = self.inner.lock();
        (
            now.saturating_duration_since(inner.last_used),
            inner.state == State::Closed && inner.consecutive == 0,
        )
    }

    fn open_wait(&self, trips: u32) -> Duration {
        let factor = 2u32.saturating_pow(trips.saturating_sub(1).min(31));
        self.config
            .open_wait
            .saturating_mul(factor)
            .min(self.config.max_open_wait)
    }

    fn record(&self, epoch: u64, ok: bool, probe: bool, retry_after: Option<Duration>) {
        let now = Instant::now();
        let change = {
            let mut inner = self.inner.lock();
            if inner.epoch != epoch {
                // A call made before the last state change: it says nothing about the target
                // as the breaker now sees it.
                return;
            }
            if probe {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            }
            let before = inner.state;
            match (inner.state, ok) {
                (State::HalfOpen, true) => {
                    inner.state = State::Closed;
                    inner.epoch = inner.epoch.wrapping_add(1);
                    inner.window.clear();
                    inner.failures = 0;
                    inner.consecutive = 0;
                    inner.trips = 0;
                }
                (State::HalfOpen, false) => {
                    self.trip(&mut inner, now, retry_after);
                }
                (State::Closed, _) => {
                    let window = self.config.window.max(1);
                    if inner.window.len() >= window as usize
                        && let Some(old) = inner.window.pop_front()
                        && !old
                    {
                        inner.failures -= 1;
                    }
                    inner.window.push_back(ok);
                    if ok {
                        inner.consecutive = 0;
                    } else {
                        inner.failures += 1;
                        inner.consecutive += 1;
                        let calls = inner.window.len() as u32;
                        let rate = f64::from(inner.failures) / f64::from(calls.max(1));
                        if retry_after.is_some()
                            || inner.consecutive >= self.config.consecutive_failures.max(1)
                            || (calls >= self.config.min_calls && rate >= self.config.failure_rate)
                        {
                            self.trip(&mut inner, now, retry_after);
                        }
                    }
                }
                // Same epoch while open cannot happen: opening bumps the epoch.
                (State::Open, _) => {}
            }
            (before != inner.state).then_some((before, inner.state))
        };
        self.notify(change);
    }

    fn trip(&self, inner: &mut Inner, now: Instant, retry_after: Option<Duration>) {
        inner.trips = inner.trips.saturating_add(1);
        let wait = match retry_after {
            // The target said when to come back: pin the wait to that.
            Some(ra) => ra.min(self.config.max_open_wait),
            None => self.open_wait(inner.trips),
        };
        inner.state = State::Open;
        inner.epoch = inner.epoch.wrapping_add(1);
        inner.probes_in_flight = 0;
        inner.open_until = now + wait;
        inner.window.clear();
        inner.failures = 0;
        inner.consecutive = 0;
    }

    fn notify(&self, change: Option<(State, State)>) {
        if let (Some((from, to)), Some(listener)) = (change, &self.listener) {
            listener(from, to);
        }
        if let Some((from, to)) = change {
            tracing::debug!(%from, %to, "circuit breaker state changed");
            // Through the `metrics` facade: nothing is recorded unless the application
            // installed a recorder.
            metrics::counter!("circuit_breaker_transitions_total", "to" => to.as_str())
                .increment(1);
            if to == State::Open {
                metrics::gauge!("circuit_breakers_open").increment(1.0);
            } else if from == State::Open {
                metrics::gauge!("circuit_breakers_open").decrement(1.0);
            }
        }
    }
}
