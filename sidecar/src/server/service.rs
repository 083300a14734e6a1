//! The Sidecar RPCs: thin translations between the wire types and the registry.
use std::pin::Pin;

use agentfleet_common::proto::{self, sidecar_server::Sidecar};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::executions::Registry;

pub struct SidecarService {
    registry: Registry,
}

impl SidecarService {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
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
        let (execution, created) = self.registry.start(request.into_inner()).await?;
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
        let req = request.into_inner();
        let execution = self.registry.stop(&req.execution_id, &req.reason).await?;
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
