// SPDX-License-Identifier: MIT
// A second evaluate() of a distillation loss with the same shapes allocates nothing: no Eigen heap allocation
// (it would abort under EIGEN_RUNTIME_NO_MALLOC) and no operator new. Every loss of kshot/distill.hpp, every
// evaluate() form, on one thread and batch-sized inputs (docs/losses.md explains the caveat for large or
// threaded GEMMs).
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/distill.hpp>

#if KSHOT_HAS_EIGEN_TENSOR
#include <unsupported/Eigen/CXX11/Tensor>  // kshot declares Eigen::Tensor only
#endif

#include <doctest/doctest.h>

using namespace kshot;
using namespace kshot::test;

namespace {

/// A batch of 20 samples: embeddings of width 8 (student) and 12 (teacher), logits over 10 classes.
struct Fixture {
  RowMatrixX<double> s = random_matrix<double>(20, 8, 1);
  RowMatrixX<double> t = random_matrix<double>(20, 12, 2);
  RowMatrixX<double> g = RowMatrixX<double>(20, 8);
  RowMatrixX<double> logits_s = random_matrix<double>(20, 10, 3);
  RowMatrixX<double> logits_t = random_matrix<double>(20, 10, 4);
  RowMatrixX<double> grad_logits = RowMatrixX<double>(20, 10);
  LabelVector y = labels_of(20, 10);
};

}  // namespace

TEST_CASE("no allocation on a second call: KDLoss and DKDLoss") {
  Fixture f;
  KDLoss<double> kd;
  check_second_call_allocates_nothing([&] { return kd.evaluate(f.logits_s, f.logits_t); });
  check_second_call_allocates_nothing([&] { return kd.evaluate(f.logits_s, f.logits_t, f.grad_logits); });
  check_second_call_allocates_nothing([&] { return kd.evaluate(f.logits_s, f.logits_t, f.y); });
  check_second_call_allocates_nothing([&] { return kd.evaluate(f.logits_s, f.logits_t, f.y, f.grad_logits); });
  kd.label_smoothing = 0.1;
  f.y[3] = kd.ignore_index;
  check_second_call_allocates_nothing([&] { return kd.evaluate(f.logits_s, f.logits_t, f.y, f.grad_logits); });

  DKDLoss<double> dkd;
  const LabelVector y = labels_of(20, 10);
  check_second_call_allocates_nothing([&] { return dkd.evaluate(f.logits_s, f.logits_t, y); });
  check_second_call_allocates_nothing([&] { return dkd.evaluate(f.logits_s, f.logits_t, y, f.grad_logits); });
}

TEST_CASE("no allocation on a second call: RKDLoss, both angle paths") {
  Fixture f;
  RKDLoss<double> rkd;
  check_second_call_allocates_nothing([&] { return rkd.evaluate(f.s, f.t); });
  check_second_call_allocates_nothing([&] { return rkd.evaluate(f.s, f.t, f.g); });
  // A duplicated row sends its apexes to the explicit difference vectors.
  RowMatrixX<double> dup = f.s;
  dup.row(3) = dup.row(4);
  check_second_call_allocates_nothing([&] { return rkd.evaluate(dup, f.t, f.g); });
}

TEST_CASE("no allocation on a second call: SPLoss, PKTLoss, EmbeddingDistillLoss") {
  Fixture f;
  SPLoss<double> sp;
  check_second_call_allocates_nothing([&] { return sp.evaluate(f.s, f.t, f.g); });
  sp.norm = SPNorm::l2;
  check_second_call_allocates_nothing([&] { return sp.evaluate(f.s, f.t); });
  check_second_call_allocates_nothing([&] { return sp.evaluate(f.s, f.t, f.g); });
  PKTLoss<double> pkt;
  check_second_call_allocates_nothing([&] { return pkt.evaluate(f.s, f.t); });
  check_second_call_allocates_nothing([&] { return pkt.evaluate(f.s, f.t, f.g); });
  EmbeddingDistillLoss<double> ed;
  check_second_call_allocates_nothing([&] { return ed.evaluate(f.s, f.t); });
  check_second_call_allocates_nothing([&] { return ed.evaluate(f.s, f.t, f.g); });
  ed.normalize = false;
  check_second_call_allocates_nothing([&] { return ed.evaluate(f.s, f.t, f.g); });
}

TEST_CASE("no allocation on a second call: FitNetLoss and AttentionTransferLoss") {
  Fixture f;
  // Feature maps of 2 x 2 positions: 4 student and 6 teacher channels.
  FitNetLoss<double> identity;
  const RowMatrixX<double> same = random_matrix<double>(20, 8, 5);
  check_second_call_allocates_nothing([&] { return identity.evaluate(f.s, same); });
  check_second_call_allocates_nothing([&] { return identity.evaluate(f.s, same, f.g); });
  FitNetLoss<double> hint;
  hint.spatial = 2;
  hint.init_regressor(4, 6, 1);
  RowMatrixX<double> gw(6, 4);
  VectorX<double> gb(6);
  RowMatrixX<double> none(0, 0);
  check_second_call_allocates_nothing([&] { return hint.evaluate(f.s, f.t, f.g); });
  check_second_call_allocates_nothing([&] { return hint.evaluate(f.s, f.t, f.g, gw, gb); });
  check_second_call_allocates_nothing([&] { return hint.evaluate(f.s, f.t, none, gw, gb); });

  AttentionTransferLoss<double> at;
  at.height = 2;
  at.width = 2;
  check_second_call_allocates_nothing([&] { return at.evaluate(f.s, f.t); });
  check_second_call_allocates_nothing([&] { return at.evaluate(f.s, f.t, f.g); });
  at.mode = AttentionMode::paper;
  check_second_call_allocates_nothing([&] { return at.evaluate(f.s, f.t, f.g); });
#if KSHOT_HAS_EIGEN_TENSOR
  using Tensor4 = AttentionTransferLoss<double>::Tensor4;
  Tensor4 ts(20, 2, 2, 2), tt(20, 3, 2, 2), tg(20, 2, 2, 2);
  ts.setRandom();
  tt.setRandom();
  check_second_call_allocates_nothing([&] { return at.evaluate(ts, tt); });
  check_second_call_allocates_nothing([&] { return at.evaluate(ts, tt, tg); });
#endif
}

TEST_CASE("no allocation on a second call: CRDLoss, drawn and given negatives") {
  Fixture f;
  CRDLoss<double> crd(8, 100, 1);
  crd.num_negatives = 16;
  const RowMatrixX<double> t = random_matrix<double>(20, 8, 6);
  RowMatrixX<double> gt(20, 8);
  IndexVector pos(20);
  for (Index i = 0; i < 20; ++i) pos[i] = 3 * i;
  check_second_call_allocates_nothing([&] { return crd.evaluate(f.s, t, pos); });
  check_second_call_allocates_nothing([&] { return crd.evaluate(f.s, t, pos, f.g); });
  check_second_call_allocates_nothing([&] { return crd.evaluate(f.s, t, pos, f.g, gt); });
  const IndexRowMatrix contrast = crd.last_indices();
  RowMatrixX<double> none(0, 0);
  check_second_call_allocates_nothing([&] { return crd.evaluate_with_indices(f.s, t, contrast, f.g, gt); });
  check_second_call_allocates_nothing([&] { return crd.evaluate_with_indices(f.s, t, contrast, f.g, none); });
}
