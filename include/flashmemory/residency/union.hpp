// flashmemory/residency/union.hpp — the union of several policies' sets.
//
//   fm::residency::Union policy{fm::residency::Threshold{0.5}, fm::residency::RecencyTail{2048}, fm::residency::Sink{0}};
//   policy.get<fm::residency::RecencyTail>().tail_chunks = 4096;
//
// A page is resident when any part keeps it; the union reports a fallback when any part does.
#pragma once

#include <flashmemory/residency/concepts.hpp>

#include <algorithm>
#include <iterator>
#include <tuple>
#include <utility>
#include <vector>

namespace flashmemory::residency {

template <residency_policy... Parts>
struct Union {
  std::tuple<Parts...> parts;

  constexpr Union() = default;
  constexpr explicit Union(Parts... p) : parts(std::move(p)...) {}

  template <class P> constexpr P& get() noexcept { return std::get<P>(parts); }
  template <class P> constexpr P const& get() const noexcept { return std::get<P>(parts); }

  ResidentSet select(SelectionContext const& ctx) const {
    ResidentSet out;
    std::apply([&](auto const&... p) { (..., merge(out, p.select(ctx))); }, parts);
    return out;
  }

 private:
  static void merge(ResidentSet& into, ResidentSet const& part) {
    std::vector<index_t> merged;
    std::set_union(into.pages.begin(), into.pages.end(), part.pages.begin(), part.pages.end(), std::back_inserter(merged));
    into.pages = std::move(merged);
    into.fallback = into.fallback || part.fallback;
  }
};

}  // namespace flashmemory::residency
