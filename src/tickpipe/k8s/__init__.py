"""`tickpipe k8s status`: is a cluster deployment of tickpipe healthy? One look at the MA job's FlinkDeployment
(job state, last checkpoint), Kafka and its topics (Strimzi), the namespace's pods and Grafana's URL."""
