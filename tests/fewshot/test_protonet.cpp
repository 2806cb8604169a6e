// SPDX-License-Identifier: MIT
// Prototypical networks and SimpleShot: easyfsl reference cases, central finite differences for every
// gradient, toy cases with known answers, bad input (episodic evaluation is in tests/eval/test_episodic.cpp).
#include <kshot/fewshot.hpp>
#include <kshot/sampling.hpp>

#include "reference.hpp"
#include "test_util.hpp"

using namespace kshot;
using kshot::test::gradient_rel_error;
using kshot::test::numeric_gradient;
using kshot::test::random_matrix;

namespace {

LabelVector cyclic_labels(Index n, Index classes) {
  LabelVector l(n);
  for (Index i = 0; i < n; ++i) l[i] = static_cast<Label>(i % classes);
  return l;
}

template <class Model>
void check_loss_gradients(Model model, const RowMatrixX<double>& s, const LabelVector& sl, const RowMatrixX<double>& q,
                          const LabelVector& ql, double tol = 1e-7) {
  RowMatrixX<double> gs(s.rows(), s.cols()), gq(q.rows(), q.cols());
  model.loss(s, sl, q, ql, gs, gq);
  Model probe = model;
  const RowMatrixX<double> ns = numeric_gradient([&](const RowMatrixX<double>& x) { return probe.loss(x, sl, q, ql); }, s);
  const RowMatrixX<double> nq = numeric_gradient([&](const RowMatrixX<double>& x) { return probe.loss(s, sl, x, ql); }, q);
  CHECK(gradient_rel_error(gs, ns) < tol);
  CHECK(gradient_rel_error(gq, nq) < tol);
}

}  // namespace

TEST_CASE("fewshot.protonet: matches easyfsl PrototypicalNetworks on the reference case") {
  const auto ref = kshot::test::load_reference("easyfsl_protonet_default");
  const RowMatrixX<double> s = ref.input("support_features"), q = ref.input("query_features");
  const LabelVector sl = ref.labels("support_labels"), ql = ref.labels("query_labels");
  ProtoNet<double> net;  // easyfsl's default: minus the Euclidean distance
  net.fit(s, sl);
  CHECK(kshot::test::max_rel_error(net.prototypes(), ref.output("prototypes")) < 1e-12);
  CHECK(kshot::test::max_rel_error(net.scores(q), ref.output("scores")) < 1e-10);
  const LabelVector predicted = net.predict(q);
  const RowMatrixX<double> want = ref.output("predictions");
  for (Index i = 0; i < predicted.size(); ++i) CHECK(predicted[i] == static_cast<Label>(want(i, 0)));
  RowMatrixX<double> gs(s.rows(), s.cols()), gq(q.rows(), q.cols());
  const double loss = net.loss(s, sl, q, ql, gs, gq);
  CHECK(std::abs(loss - ref.loss()) < 1e-12 * std::abs(ref.loss()) + 1e-14);
  CHECK(gradient_rel_error(gs, ref.grad("support_features")) < 1e-9);
  CHECK(gradient_rel_error(gq, ref.grad("query_features")) < 1e-9);
}

TEST_CASE("fewshot.protonet: loss gradients match central differences for every distance") {
  const RowMatrixX<double> s = random_matrix<double>(9, 5, 3), q = random_matrix<double>(7, 5, 4);
  const LabelVector sl = cyclic_labels(9, 3), ql = cyclic_labels(7, 3);
  check_loss_gradients(ProtoNet<double>(ProtoDistance::euclidean), s, sl, q, ql);
  check_loss_gradients(ProtoNet<double>(ProtoDistance::squared_euclidean, 0.5), s, sl, q, ql);
  check_loss_gradients(ProtoNet<double>(ProtoDistance::cosine, 10.0), s, sl, q, ql);
  // Unequal shots: 1, 2 and 4 examples per class.
  const LabelVector uneven = (LabelVector(7) << 0, 1, 1, 2, 2, 2, 2).finished();
  const RowMatrixX<double> s7 = random_matrix<double>(7, 5, 5);
  check_loss_gradients(ProtoNet<double>(ProtoDistance::squared_euclidean), s7, uneven, q, ql);
}

TEST_CASE_TEMPLATE("fewshot.protonet: Euclidean scores and gradients are the Euclidean kernel's, bit for bit", Scalar,
                   float, double) {
  // ProtoNet computes Euclidean distances through the squared kernel (one kernel fewer to compile); the result must
  // be exactly the Euclidean kernel's, on the direct path (3 classes) and the GEMM path (20 classes), with a query
  // exactly on a prototype (distance 0, zero gradient through that pair).
  for (const Index classes : {Index(3), Index(20)}) {
    CAPTURE(classes);
    const RowMatrixX<Scalar> s = random_matrix<Scalar>(2 * classes, 6, 21);
    RowMatrixX<Scalar> q = random_matrix<Scalar>(11, 6, 22);
    const LabelVector sl = cyclic_labels(2 * classes, classes), ql = cyclic_labels(11, classes);
    ProtoNet<Scalar> net(ProtoDistance::euclidean, Scalar(1.5));
    net.fit(s, sl);
    q.row(4) = net.prototypes().row(ql[4]);
    RowMatrixX<Scalar> gs(s.rows(), 6), gq(11, 6);
    (void)net.loss(s, sl, q, ql, gs, gq);
    const RowMatrixX<Scalar> scores = net.scores(q);

    PairwiseDistance<Scalar, Euclidean> kernel;
    const RowMatrixX<Scalar> prototypes = net.prototypes();
    RowMatrixX<Scalar> d(11, classes);
    kernel.compute(q, prototypes, d);
    CHECK(d(4, ql[4]) == Scalar(0));
    const RowMatrixX<Scalar> logits = Scalar(-1.5) * d;
    CHECK((scores.array() == logits.array()).all());
    RowMatrixX<Scalar> g = logits;  // dL/dD = -t (softmax - onehot) / Q, as ProtoNet::loss forms it
    for (Index i = 0; i < 11; ++i) {
      auto row = g.row(i);
      const Scalar m = row.maxCoeff();
      row = (row.array() - m).exp();
      row /= row.sum();
      row(ql[i]) -= Scalar(1);
    }
    const RowMatrixX<Scalar> gd = (Scalar(-1.5) / Scalar(11)) * g;
    RowMatrixX<Scalar> expect_q(11, 6), expect_p(classes, 6);
    kernel.backward(q, prototypes, d, gd, expect_q, expect_p);
    CHECK((gq.array() == expect_q.array()).all());
    CHECK(gq.row(4).allFinite());
  }
}

TEST_CASE("fewshot.protonet: near-degenerate episodes stay finite with exact gradients") {
  // A query almost on a prototype (tiny Euclidean distance) and duplicated support rows.
  RowMatrixX<double> s = random_matrix<double>(6, 4, 8);
  s.row(1) = s.row(0);
  const LabelVector sl = cyclic_labels(6, 3);
  ProtoNet<double> net;
  net.fit(s, sl);
  RowMatrixX<double> q = random_matrix<double>(3, 4, 9);
  q.row(0) = net.prototypes().row(1) + RowVectorX<double>::Constant(4, 1e-3);
  check_loss_gradients(ProtoNet<double>(), s, sl, q, cyclic_labels(3, 3), 1e-6);
  // Exactly on a prototype: finite loss and gradients.
  q.row(0) = net.prototypes().row(1);
  RowMatrixX<double> gs(6, 4), gq(3, 4);
  const double loss = net.loss(s, sl, q, cyclic_labels(3, 3), gs, gq);
  CHECK(std::isfinite(loss));
  CHECK(gs.allFinite());
  CHECK(gq.allFinite());
}

TEST_CASE("fewshot.protonet: separated clusters are classified perfectly and float agrees with double") {
  RowMatrixX<double> centres(4, 6);
  centres.setZero();
  for (Index c = 0; c < 4; ++c) centres(c, c) = 10.0;
  RowMatrixX<double> s = 0.1 * random_matrix<double>(12, 6, 1), q = 0.1 * random_matrix<double>(20, 6, 2);
  const LabelVector sl = cyclic_labels(12, 4), ql = cyclic_labels(20, 4);
  for (Index i = 0; i < 12; ++i) s.row(i) += centres.row(sl[i]);
  for (Index i = 0; i < 20; ++i) q.row(i) += centres.row(ql[i]);
  for (ProtoDistance d : {ProtoDistance::euclidean, ProtoDistance::squared_euclidean, ProtoDistance::cosine}) {
    ProtoNet<double> net(d);
    net.fit(s, sl);
    CHECK(net.predict(q) == ql);
    // Float against double on unseparated random data (on the clusters the softmax saturates and the
    // gradients underflow in float).
    const RowMatrixX<double> rs = random_matrix<double>(12, 6, 5), rq = random_matrix<double>(20, 6, 6);
    ProtoNet<float> netf(d);
    const RowMatrixX<float> sf = rs.cast<float>(), qf = rq.cast<float>();
    RowMatrixX<float> gsf(12, 6), gqf(20, 6);
    RowMatrixX<double> gs(12, 6), gq(20, 6);
    const double ld = net.loss(rs, sl, rq, ql, gs, gq);
    const float lf = netf.loss(sf, sl, qf, ql, gsf, gqf);
    CHECK(std::abs(double(lf) - ld) < 1e-5 * (1 + std::abs(ld)));
    CHECK(gradient_rel_error(gsf.cast<double>(), gs) < 1e-4);
    CHECK(gradient_rel_error(gqf.cast<double>(), gq) < 1e-4);
  }
}

TEST_CASE("fewshot.protonet: bad input throws naming the function and the numbers") {
  ProtoNet<double> net;
  const RowMatrixX<double> s = random_matrix<double>(6, 4, 1), q = random_matrix<double>(3, 5, 2);
  const LabelVector sl = cyclic_labels(6, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(net.scores(q), std::invalid_argument, "kshot::ProtoNet::scores()", "fit() has not been called");
  net.fit(s, sl);
  KSHOT_CHECK_THROWS_WITH_ALL(net.scores(q), std::invalid_argument, "query has 5 columns but the support had 4");
  const LabelVector gap = (LabelVector(6) << 0, 0, 2, 2, 3, 3).finished();
  KSHOT_CHECK_THROWS_WITH_ALL(net.fit(s, gap), std::invalid_argument, "kshot::ProtoNet::fit()", "class 1 has no support example");
  const LabelVector negative = (LabelVector(6) << 0, 1, 2, -1, 1, 2).finished();
  KSHOT_CHECK_THROWS_WITH_ALL(net.fit(s, negative), std::invalid_argument, "negative label (-1)");
  KSHOT_CHECK_THROWS_WITH_ALL(net.fit(s, cyclic_labels(5, 3)), std::invalid_argument,
                              "support_labels has 5 entries but support has 6 rows");
  const RowMatrixX<double> q4 = random_matrix<double>(3, 4, 3);
  const LabelVector bad_q = (LabelVector(3) << 0, 3, 1).finished();
  KSHOT_CHECK_THROWS_WITH_ALL(net.loss(s, sl, q4, bad_q), std::invalid_argument, "kshot::ProtoNet::loss()",
                              "query_labels[1] = 3 is outside [0, 3)");
  ProtoNet<double> cold(ProtoDistance::cosine, 0.0);
  KSHOT_CHECK_THROWS_WITH_ALL(cold.fit(s, sl), std::invalid_argument, "temperature must be finite and > 0, got 0");
  RowMatrixX<double> nan_s = s;
  nan_s(4, 2) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(net.fit(nan_s, sl), std::invalid_argument, "support has a non-finite value");
}

TEST_CASE("fewshot.simpleshot: matches easyfsl SimpleShot on the reference case") {
  const auto ref = kshot::test::load_reference("easyfsl_simpleshot_default");
  const RowMatrixX<double> s = ref.input("support_features"), q = ref.input("query_features");
  const LabelVector sl = ref.labels("support_labels"), ql = ref.labels("query_labels");
  SimpleShot<double> model;
  model.fit(s, sl);
  CHECK(kshot::test::max_rel_error(model.prototypes(), ref.output("prototypes")) < 1e-12);
  CHECK(kshot::test::max_rel_error(model.scores(q), ref.output("scores")) < 1e-10);
  RowMatrixX<double> gs(s.rows(), s.cols()), gq(q.rows(), q.cols());
  const double loss = model.loss(s, sl, q, ql, gs, gq);
  CHECK(std::abs(loss - ref.loss()) < 1e-12 * std::abs(ref.loss()) + 1e-14);
  CHECK(gradient_rel_error(gs, ref.grad("support_features")) < 1e-9);
  CHECK(gradient_rel_error(gq, ref.grad("query_features")) < 1e-9);
}

TEST_CASE("fewshot.simpleshot: centring and L2 normalisation with exact gradients") {
  const RowMatrixX<double> s = random_matrix<double>(8, 5, 21), q = random_matrix<double>(6, 5, 22);
  const LabelVector sl = cyclic_labels(8, 4), ql = cyclic_labels(6, 4);
  const RowVectorX<double> centre = random_matrix<double>(1, 5, 23);
  check_loss_gradients(SimpleShot<double>(centre, true), s, sl, q, ql);
  check_loss_gradients(SimpleShot<double>(centre, false), s, sl, q, ql);
  // CL2N by hand: prototype 0 is the mean of the normalised centred rows of class 0.
  SimpleShot<double> model(centre, true);
  model.fit(s, sl);
  RowVectorX<double> p0 = RowVectorX<double>::Zero(5);
  for (Index i : {0, 4}) p0 += (s.row(i) - centre).normalized();
  CHECK(kshot::test::max_rel_error(model.prototypes().row(0), p0 / 2.0) < 1e-14);
  KSHOT_CHECK_THROWS_WITH_ALL(SimpleShot<double>(RowVectorX<double>::Zero(3), true).fit(s, sl), std::invalid_argument,
                              "center has 3 entries but the features have 5 columns");
}

namespace {

/// fit() of classifier C on two examples labelled 0 and `big`: refused before anything is sized by `big`.
template <class Classifier>
void check_sparse_labels_refused(Classifier classifier, Label big) {
  const RowMatrixX<float> support = random_matrix<float>(2, 3, 17);
  const LabelVector labels = (LabelVector(2) << 0, big).finished();
  const std::string expected = kshot::detail::cat("support_labels has the label ", big, " but only 2 entries");
  KSHOT_CHECK_THROWS_WITH_ALL(classifier.fit(support, labels), std::invalid_argument, expected.c_str(),
                              "cannot all have a support example");
}

}  // namespace

TEST_CASE("fewshot: every classifier refuses a label beyond the support size before sizing by it (issue 17)") {
  // Label 2^30 asked ProtoNet for 8 GB of class counters (and 30 s) before it reported the missing classes.
  const Label huge = Label(1) << 30;
  check_sparse_labels_refused(ProtoNet<float>{}, huge);
  check_sparse_labels_refused(SimpleShot<float>{}, huge);
  check_sparse_labels_refused(MatchingNetworks<float>{}, huge);
  check_sparse_labels_refused(RidgeHead<float>{}, huge);
  check_sparse_labels_refused(LogisticHead<float>{}, huge);
  check_sparse_labels_refused(SoftKMeans<float>{}, huge);
  check_sparse_labels_refused(BDCSPN<float>{}, huge);
  check_sparse_labels_refused(LaplacianShot<float>{}, huge);
  check_sparse_labels_refused(PTMAP<float>{}, huge);
  check_sparse_labels_refused(TIM<float>{}, huge);
  // The smallest refused label: 2 examples can cover classes 0..1 only.
  check_sparse_labels_refused(ProtoNet<float>{}, 2);
  // Label 1 with 2 examples is fine.
  ProtoNet<float> net;
  net.fit(random_matrix<float>(2, 3, 17), (LabelVector(2) << 0, 1).finished());
  CHECK(net.num_classes() == 2);
  // A gap that the count allows is still the missing-class error.
  KSHOT_CHECK_THROWS_WITH_ALL(net.fit(random_matrix<float>(3, 3, 18), (LabelVector(3) << 0, 2, 2).finished()),
                              std::invalid_argument, "class 1 has no support example");
}
