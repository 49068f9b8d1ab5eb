/**
 * corral's cluster API (`import … from 'corral/cluster'`): the cluster spec, the CDK stack and its
 * constructs (a CDK app may hold a corral cluster beside its own stacks), the offline plan, `up` and
 * `down`, and running a job on a cluster. Kept apart from `corral` because it loads aws-cdk-lib.
 */
export { type ClusterTarget, resolveClusterTarget } from './aws/outputs.js';
export { ClusterAccess, type ClusterAccessProps } from './infra/cluster-access.js';
export { ClusterBucket, type ClusterBucketProps } from './infra/cluster-bucket.js';
export { ClusterStack, type ClusterStackProps } from './infra/cluster-stack.js';
export { Database, type DatabaseProps } from './infra/database.js';
export { type DownOptions, down, type UpOptions, type UpResult, up } from './infra/deploy.js';
export { InstanceRole, type InstanceRoleProps } from './infra/instance-role.js';
export { JobQueue, type JobQueueProps } from './infra/job-queue.js';
export { Monitoring, type MonitoringProps } from './infra/monitoring.js';
export { Network, type NetworkProps } from './infra/network.js';
export { Peering, type PeeringProps } from './infra/peering.js';
export { formatPlan, type PlanReport, planCluster } from './infra/plan.js';
export { type CostEstimate, estimateCost } from './infra/prices.js';
export { StaticInstances, type StaticInstancesProps } from './infra/static-instances.js';
export { buildWorkerArtifact, type WorkerArtifact } from './infra/worker-artifact.js';
export { WorkerPool, type WorkerPoolProps } from './infra/worker-pool.js';
export {
  type ClusterSpec,
  type ClusterSpecInput,
  defineCluster,
  loadClusterFile,
  type PoolSpec,
} from './spec/cluster.js';
export { type ClusterRunOptions, runClusterJob } from './transport/cluster/cluster-run.js';
