// The reference decoder against transformers 5.17 (float32, eager): full forward, token-by-token decode and
// chunked prefill on every golden fixture (design.md §4 invariants 1 and 2).
#include "fixtures.hpp"

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

using namespace dsv4_test;

namespace {
constexpr double kTolerance = 1e-4;
}

TEST_CASE("full forward matches transformers", "[deepseek_v4][golden]") {
  std::string name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  auto [config, weights] = v4::load_model(fixture_dir(name));
  Golden g = load_golden(name);
  v4::Decoder<> model(config, std::move(weights));
  auto logits = model.forward(g.ids, v4::Logits::all);
  REQUIRE(logits.size() == g.full.size());
  double err = rel_err(logits, g.full);
  UNSCOPED_INFO("rel err vs logits_full: " << err);
  CHECK(err <= kTolerance);
}

TEST_CASE("token-by-token decode matches transformers", "[deepseek_v4][golden]") {
  std::string name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  auto [config, weights] = v4::load_model(fixture_dir(name));
  Golden g = load_golden(name);
  v4::Decoder<> model(config, std::move(weights));
  auto logits = run_chunked(model, g.ids, {1});
  double err = rel_err(logits, g.decode);
  UNSCOPED_INFO("rel err vs logits_decode: " << err);
  CHECK(err <= kTolerance);
}

TEST_CASE("chunked prefill with odd chunks matches transformers and the one-shot forward", "[deepseek_v4][golden]") {
  std::string name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  auto [config, weights] = v4::load_model(fixture_dir(name));
  Golden g = load_golden(name);
  v4::Decoder<> model(config, std::move(weights));
  auto chunked = run_chunked(model, g.ids, {1, 3, 5, 7, 9, 11, 13, 15});
  double err = rel_err(chunked, g.chunked);
  UNSCOPED_INFO("rel err vs logits_chunked: " << err);
  CHECK(err <= kTolerance);
  model.reset();
  auto full = model.forward(g.ids, v4::Logits::all);
  // Same arithmetic per token whatever the chunking: the host reference agrees with itself bit for bit.
  CHECK(rel_err(chunked, full) == 0.0);
}
