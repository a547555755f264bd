//! The fake Kubernetes API server the kube source tests run against; it
//! lives in `pinfleet::testkit::fake_kube` so benchmarks use the same one.

pub use pinfleet::testkit::fake_kube::FakeKube;
