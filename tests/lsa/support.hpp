// Helpers shared by the LSA tests.
#pragma once

#include <cstddef>
#include <random>
#include <vector>

inline std::vector<float> random_vector(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> n01;
  std::vector<float> v(n);
  for (float& x : v) x = n01(rng);
  return v;
}
