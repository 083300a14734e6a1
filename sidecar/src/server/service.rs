//! The Sidecar RPCs: thin translations between the wire types and the registry. StartJob
//! and StopJob are written to the audit log with their caller and answer.
use std::pin::Pin;

use agentfleet_common::proto::{self, sidecar_server::Sidecar};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::auth::{caller_of, peer_of};
use crate::audit::{self, AuditLog};
use crate::executions::Registry;

pub struct SidecarService {
    registry: Registry,
    audit: AuditLog,
}

impl SidecarService {
    pub fn new(registry: Registry, audit: AuditLog) -> Self {
        Self { registry, audit }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Sidecar for SidecarService {
    async fn describe(
        &self,
        _request: Request<proto::DescribeRequest>,
    ) -> Result<Response<proto::DescribeResponse>, Status> {
        Ok(Response::new(self.registry.describe()))
    }

    async fn list_jobs(
        &self,
        _request: Request<proto::ListJobsRequest>,
    ) -> Result<Response<proto::ListJobsResponse>, Status> {
        let jobs = self.registry.list_jobs().await?;
        Ok(Response::new(proto::ListJobsResponse { jobs }))
    }

    async fn start_job(
        &self,
        request: Request<proto::StartJobRequest>,
    ) -> Result<Response<proto::StartJobResponse>, Status> {
        let parent = crate::telemetry::parent_of(request.metadata(), request.get_ref());
        let caller = caller_of(&request);
        let peer = peer_of(&request);
        let req = request.into_inner();
        let shown = self.registry.loggable_params(&req.job);
        let mut entry = audit::Entry::now("StartJob", &caller.0, &peer, audit::Answer::Created);
        entry.execution_id = req.execution_id.clone();
        entry.job = req.job.clone();
        entry.params = audit::redact(&req.params.clone().into_iter().collect(), &shown);
        let started = self
            .registry
            .start(req, &caller.0)
            .await
            .map_err(Status::from);
        entry.answer = match &started {
            Ok((_, true)) => audit::Answer::Created,
            Ok((_, false)) => audit::Answer::Existing,
            Err(status) => audit::Answer::refused(status),
        };
        self.audit.record(&entry);
        let (execution, created) = started?;
        if created {
            crate::telemetry::follow(&self.registry, &execution, parent);
        }
        Ok(Response::new(proto::StartJobResponse {
            execution: Some(execution),
            created,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let stream = self.registry.watch(&req.execution_id, req.after_seq)?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn stop_job(
        &self,
        request: Request<proto::StopJobRequest>,
    ) -> Result<Response<proto::StopJobResponse>, Status> {
        let caller = caller_of(&request);
        let mut entry = audit::Entry::now(
            "StopJob",
            &caller.0,
            &peer_of(&request),
            audit::Answer::Stopping,
        );
        let req = request.into_inner();
        entry.execution_id = req.execution_id.clone();
        entry.reason = req.reason.clone();
        let stopped = self
            .registry
            .stop(&req.execution_id, &req.reason, &caller.0)
            .await
            .map_err(Status::from);
        match &stopped {
            Ok(execution) => entry.job = execution.job.clone(),
            Err(status) => entry.answer = audit::Answer::refused(status),
        }
        self.audit.record(&entry);
        let execution = stopped?;
        Ok(Response::new(proto::StopJobResponse {
            execution: Some(execution),
        }))
    }

    async fn list_executions(
        &self,
        request: Request<proto::ListExecutionsRequest>,
    ) -> Result<Response<proto::ListExecutionsResponse>, Status> {
        let executions = self.registry.list(request.into_inner().running_only);
        Ok(Response::new(proto::ListExecutionsResponse { executions }))
    }

    async fn ack_executions(
        &self,
        request: Request<proto::AckExecutionsRequest>,
    ) -> Result<Response<proto::AckExecutionsResponse>, Status> {
        let pruned = self
            .registry
            .ack(&request.into_inner().execution_ids)
            .await?;
        Ok(Response::new(proto::AckExecutionsResponse { pruned }))
    }
}
