//! The client side of a run: starts each scenario's instances over gRPC, raises its events,
//! terminates, suspends and resumes, purges and re-creates — retrying through engine crashes —
//! then checks each incarnation's outcome against the reference model.

use crate::invariants::{check_history, describe};
use crate::model::expected_output;
use crate::program::{EVENT_NAME, Incarnation, Scenario, WORKFLOW_NAME, event_payload};
use crate::worker::connect;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};
use weft_core::RuntimeStatus;
use weft_proto::durabletask::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as Client;
use weft_proto::durabletask::{
    CreateInstanceRequest, GetInstanceHistoryRequest, GetInstanceRequest, GetInstanceResponse,
    ListInstanceIDsRequest, PurgeInstancesRequest, RaiseEventRequest, ResumeRequest,
    SuspendRequest, TerminateRequest, purge_instances_request,
};

pub const TERMINATE_REASON: &str = "sim-terminated";

/// A gRPC client that follows the engine across restarts and retries transient failures.
pub struct Api {
    addr: watch::Receiver<Option<String>>,
    cached: Mutex<Option<(String, Client<Channel>)>>,
    /// Give up (and report) after this point.
    pub deadline: Instant,
}

fn transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

impl Api {
    pub fn new(addr: watch::Receiver<Option<String>>, deadline: Instant) -> Self {
        Self {
            addr,
            cached: Mutex::new(None),
            deadline,
        }
    }

    async fn client(&self) -> Result<Client<Channel>, Status> {
        loop {
            if Instant::now() > self.deadline {
                return Err(Status::deadline_exceeded("the run's deadline passed"));
            }
            let url = self.addr.borrow().clone();
            if let Some(url) = url {
                if let Some((u, c)) = self.cached.lock().expect("not poisoned").as_ref()
                    && *u == url
                {
                    return Ok(c.clone());
                }
                if let Some(c) = connect(&url).await {
                    *self.cached.lock().expect("not poisoned") = Some((url, c.clone()));
                    return Ok(c);
                }
            }
            let mut rx = self.addr.clone();
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    }

    /// Runs `f` until it succeeds or fails for a reason other than the engine being down.
    /// `retried` is set when an attempt failed in a way that may have taken effect.
    pub async fn call<T, F, Fut>(&self, retried: &mut bool, f: F) -> Result<T, Status>
    where
        F: Fn(Client<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        loop {
            let c = self.client().await?;
            // Bounded, whatever the call: an engine killed mid-call must not hang the client.
            let r = tokio::time::timeout(Duration::from_secs(10), f(c))
                .await
                .unwrap_or_else(|_| Err(Status::unavailable("no answer within 10 s")));
            match r {
                Ok(v) => return Ok(v),
                Err(s) if transient(&s) && Instant::now() < self.deadline => {
                    *retried = true;
                    // Start from a fresh connection: the engine may have restarted.
                    *self.cached.lock().expect("not poisoned") = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(s) => return Err(s),
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<GetInstanceResponse, Status> {
        self.call(&mut false, |mut c| async move {
            c.get_instance(GetInstanceRequest {
                instance_id: id.to_string(),
                get_inputs_and_outputs: true,
                router: None,
            })
            .await
            .map(|r| r.into_inner())
        })
        .await
    }

    /// Waits for a terminal status (`None` if the instance does not exist).
    pub async fn wait_terminal(&self, id: &str) -> Result<Option<GetInstanceResponse>, Status> {
        loop {
            let r = self
                .call(&mut false, |mut c| async move {
                    let mut req = tonic::Request::new(GetInstanceRequest {
                        instance_id: id.to_string(),
                        get_inputs_and_outputs: true,
                        router: None,
                    });
                    req.set_timeout(Duration::from_secs(2));
                    match c.wait_for_instance_completion(req).await {
                        Ok(r) => Ok(Some(r.into_inner())),
                        // The wait timed out: ask again (the engine may have restarted).
                        Err(s) if s.code() == Code::DeadlineExceeded => Ok(None),
                        Err(s) => Err(s),
                    }
                })
                .await?;
            match r {
                Some(r) if !r.exists => return Ok(None),
                Some(r) => return Ok(Some(r)),
                None if Instant::now() > self.deadline => {
                    return Err(Status::deadline_exceeded(format!(
                        "{id} did not finish before the run's deadline"
                    )));
                }
                None => {}
            }
        }
    }

    pub async fn history(
        &self,
        id: &str,
    ) -> Result<Vec<weft_proto::durabletask::HistoryEvent>, Status> {
        self.call(&mut false, |mut c| async move {
            c.get_instance_history(GetInstanceHistoryRequest {
                instance_id: id.to_string(),
            })
            .await
            .map(|r| r.into_inner().events)
        })
        .await
    }

    /// Every instance ID the engine knows.
    pub async fn list(&self) -> Result<Vec<String>, Status> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let t = token.clone();
            let page = self
                .call(&mut false, |mut c| {
                    let t = t.clone();
                    async move {
                        c.list_instance_i_ds(ListInstanceIDsRequest {
                            continuation_token: t,
                            page_size: Some(500),
                        })
                        .await
                        .map(|r| r.into_inner())
                    }
                })
                .await?;
            out.extend(page.instance_ids);
            match page.continuation_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }
}

fn status_of(r: &GetInstanceResponse) -> (Option<RuntimeStatus>, Option<String>, Option<String>) {
    match &r.workflow_state {
        Some(s) => (
            RuntimeStatus::from_code(s.workflow_status),
            s.output.clone(),
            s.custom_status.clone(),
        ),
        None => (None, None, None),
    }
}

/// Figures of one scenario run.
#[derive(Debug, Default, Clone)]
pub struct ScenarioStats {
    pub raised: u64,
    pub raise_retries: u64,
    pub terminated: u64,
    pub suspended: u64,
    pub recreated: u64,
    /// Payloads whose raise was retried after a failure (they may have landed twice).
    pub retried: HashSet<String>,
}

/// Runs a scenario to the end and returns what went wrong.
pub async fn run_scenario(sc: &Scenario, api: &Api, stats: &Mutex<ScenarioStats>) -> Vec<String> {
    let id = sc.instance_id.as_str();
    let mut problems = Vec::new();
    for (k, inc) in sc.incarnations.iter().enumerate() {
        let who = format!("{id} (incarnation {k})");
        if k > 0 {
            // Purge the finished incarnation (and its children), then create the ID anew.
            let mut again = false;
            'purge: loop {
                let purged = api
                    .call(&mut again, |mut c| async move {
                        c.purge_instances(PurgeInstancesRequest {
                            request: Some(purge_instances_request::Request::InstanceId(id.into())),
                            recursive: true,
                            force: None,
                            router: None,
                        })
                        .await
                    })
                    .await;
                match purged {
                    Ok(_) => {}
                    // The first attempt purged it; its reply was lost.
                    Err(s) if s.code() == Code::NotFound && again => {}
                    // Children of a terminated parent still run (purge refuses them, as daprd).
                    Err(s)
                        if s.code() == Code::FailedPrecondition
                            && Instant::now() < api.deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue 'purge;
                    }
                    Err(s) => {
                        problems.push(format!("{who}: purge failed: {s}"));
                        return problems;
                    }
                }
                break 'purge;
            }
            stats.lock().expect("not poisoned").recreated += 1;
        }
        match run_incarnation(id, &who, inc, api, stats).await {
            Ok(p) => problems.extend(p),
            Err(s) => {
                problems.push(format!("{who}: {s}"));
                return problems;
            }
        }
    }
    problems
}

async fn run_incarnation(
    id: &str,
    who: &str,
    inc: &Incarnation,
    api: &Api,
    stats: &Mutex<ScenarioStats>,
) -> Result<Vec<String>, Status> {
    start(api, id, inc).await?;
    let later = Interventions {
        api,
        id,
        t0: Instant::now(),
        stats,
    };
    let retried: Mutex<HashSet<String>> = Mutex::default();
    let (a, b, c) = tokio::join!(
        raise_events(api, id, inc, stats, &retried),
        later.terminate(inc.terminate),
        later.suspend(inc.suspend)
    );
    a?;
    b?;
    c?;
    let retried = retried.into_inner().expect("not poisoned");
    check_outcome(api, id, who, inc, &retried).await
}

/// Starts the incarnation's instance (a start whose reply was lost counts as done).
async fn start(api: &Api, id: &str, inc: &Incarnation) -> Result<(), Status> {
    let input = serde_json::to_string(&inc.input).expect("serialisable");
    let input = input.as_str();
    api.call(&mut false, |mut c| async move {
        let mut req = tonic::Request::new(CreateInstanceRequest {
            instance_id: id.to_string(),
            name: WORKFLOW_NAME.into(),
            input: Some(input.to_string()),
            ..Default::default()
        });
        req.set_timeout(Duration::from_secs(3));
        match c.start_instance(req).await {
            Ok(_) => Ok(()),
            // A retry of a start whose reply was lost.
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(s),
        }
    })
    .await
}

/// Raises the incarnation's events after their delays; `retried` collects the payloads whose
/// raise was retried (they may land twice).
async fn raise_events(
    api: &Api,
    id: &str,
    inc: &Incarnation,
    stats: &Mutex<ScenarioStats>,
    retried: &Mutex<HashSet<String>>,
) -> Result<(), Status> {
    for (i, delay) in inc.event_delays.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        if inc.gate && !wait_for_generation(api, id, inc.event_gens[i]).await? {
            return Ok(()); // finished (terminated) before it needed it
        }
        let payload = event_payload(&inc.input.salt, i);
        let p = payload.as_str();
        let mut again = false;
        api.call(&mut again, |mut c| async move {
            c.raise_event(RaiseEventRequest {
                instance_id: id.to_string(),
                name: EVENT_NAME.into(),
                input: Some(p.to_string()),
                router: None,
            })
            .await
        })
        .await?;
        let mut st = stats.lock().expect("not poisoned");
        st.raised += 1;
        if again {
            st.raise_retries += 1;
            retried
                .lock()
                .expect("not poisoned")
                .insert(payload.clone());
            st.retried.insert(payload);
        }
    }
    Ok(())
}

/// The client's planned interventions on one incarnation's instance, timed from its start.
struct Interventions<'a> {
    api: &'a Api,
    id: &'a str,
    t0: Instant,
    stats: &'a Mutex<ScenarioStats>,
}

impl Interventions<'_> {
    /// Terminates the instance `after` ms, if planned.
    async fn terminate(&self, plan: Option<(u64, bool)>) -> Result<(), Status> {
        let Some((after, recursive)) = plan else {
            return Ok(());
        };
        tokio::time::sleep_until(self.t0 + Duration::from_millis(after)).await;
        let id = self.id;
        self.api
            .call(&mut false, |mut c| async move {
                let mut req = tonic::Request::new(TerminateRequest {
                    instance_id: id.to_string(),
                    output: Some(TERMINATE_REASON.into()),
                    recursive,
                    router: None,
                });
                req.set_timeout(Duration::from_secs(3));
                c.terminate_instance(req).await
            })
            .await?;
        self.stats.lock().expect("not poisoned").terminated += 1;
        Ok(())
    }

    /// Suspends the instance `after` ms, if planned, and resumes it `hold` ms later.
    async fn suspend(&self, plan: Option<(u64, u64)>) -> Result<(), Status> {
        let Some((after, hold)) = plan else {
            return Ok(());
        };
        tokio::time::sleep_until(self.t0 + Duration::from_millis(after)).await;
        let id = self.id;
        self.api
            .call(&mut false, |mut c| async move {
                let mut req = tonic::Request::new(SuspendRequest {
                    instance_id: id.to_string(),
                    reason: Some("sim".into()),
                    router: None,
                });
                req.set_timeout(Duration::from_secs(3));
                c.suspend_instance(req).await
            })
            .await?;
        self.stats.lock().expect("not poisoned").suspended += 1;
        tokio::time::sleep(Duration::from_millis(hold)).await;
        self.api
            .call(&mut false, |mut c| async move {
                let mut req = tonic::Request::new(ResumeRequest {
                    instance_id: id.to_string(),
                    reason: Some("sim".into()),
                    router: None,
                });
                req.set_timeout(Duration::from_secs(3));
                c.resume_instance(req).await
            })
            .await?;
        Ok(())
    }
}

/// Waits for the instance to finish and checks its outcome against the model and its history
/// against the invariants.
async fn check_outcome(
    api: &Api,
    id: &str,
    who: &str,
    inc: &Incarnation,
    retried: &HashSet<String>,
) -> Result<Vec<String>, Status> {
    let mut problems = Vec::new();
    let Some(fin) = api.wait_terminal(id).await? else {
        problems.push(format!("{who}: the instance disappeared"));
        return Ok(problems);
    };
    let (status, output, _) = status_of(&fin);
    let want = expected_output(&inc.input);
    match status {
        Some(RuntimeStatus::Completed) if output.as_deref() == Some(want.as_str()) => {}
        Some(RuntimeStatus::Terminated)
            if inc.terminate.is_some() && output.as_deref() == Some(TERMINATE_REASON) => {}
        other => problems.push(format!(
            "{who}: ended {other:?} with output {output:?}; the model says COMPLETED with \
             {want:?}{}",
            if inc.terminate.is_some() {
                " (or TERMINATED)"
            } else {
                ""
            }
        )),
    }
    let history = api.history(id).await?;
    let exec = fin
        .workflow_state
        .as_ref()
        .and_then(|s| s.execution_id.clone());
    if history.is_empty() && status == Some(RuntimeStatus::Terminated) && inc.terminate.is_some() {
        // Terminated before any worker ran it (the start's reply was lost, so the client did
        // not wait for the first turn): no execution ever started, nothing to check.
        return Ok(problems);
    }
    problems.extend(check_history(
        who,
        true,
        exec.as_deref(),
        Some(&inc.input.salt),
        &history,
        retried,
    ));
    if !problems.is_empty() {
        problems.push(format!(
            "{who}: final status {status:?}, history: {}",
            describe(&history)
        ));
    }
    Ok(problems)
}

/// Waits until the instance runs generation `generation` (its custom status says `g<n>`, n ≥ generation);
/// false if it finished first.
async fn wait_for_generation(api: &Api, id: &str, generation: usize) -> Result<bool, Status> {
    loop {
        let r = api.get(id).await?;
        let (status, _, custom) = status_of(&r);
        if status.is_some_and(|s| s.is_terminal()) {
            return Ok(false);
        }
        let at: Option<usize> = custom
            .as_deref()
            .and_then(|c| c.strip_prefix('g'))
            .and_then(|n| n.parse().ok());
        if at.is_some_and(|g| g >= generation) {
            return Ok(true);
        }
        if Instant::now() > api.deadline {
            return Err(Status::deadline_exceeded(format!(
                "{id} never reached generation {generation}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}
