// The greedy of expert-aware tree scheduling (core/expert_aware_tree.py `_greedy_python`) in C++:
// the order in which it adds a batch's candidate nodes and the length of its best prefix. It must
// give exactly the Python loop's answer: the same float64 operations in the same order (built with
// -ffp-contract=off), the same first-index argmax, the same integer bookkeeping of new expert
// reads. The Python loop costs ~50 us a step in tensor operations (a batch of 32 budget-32 trees:
// ~1000 steps, ~90 ms a round); here a step is a pass over the frontier.
// tests/test_expert_greedy.py compares the two on random batches.
//
// Compiled with tree_native.cpp into one library by core/tree_native.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

// rows of a CSR list: for each key, the items with that key
struct Lists {
    std::vector<int64_t> start, items;
    template <class Each>
    void build(int64_t keys, Each each) {  // each(emit) calls emit(key, item) for every pair
        start.assign(static_cast<size_t>(keys + 1), 0);
        each([&](int64_t key, int64_t) { ++start[key + 1]; });
        for (int64_t k = 0; k < keys; ++k) start[k + 1] += start[k];
        items.assign(static_cast<size_t>(start[keys]), 0);
        std::vector<int64_t> at(start.begin(), start.end() - 1);
        each([&](int64_t key, int64_t item) { items[at[key]++] = item; });
    }
};

}  // namespace

extern "C" {

// N nodes (global ids, roots have parent -1), reads = L * E (layer, expert) pairs, inc [N, reads]
// 0/1, col [reads] the (layer, rank) column of each read (only read when d > 0), R ranks, B trees,
// tree_of [N]. Writes the addition order to order[0..steps) and the best prefix length to
// *best_len; returns steps. patience < 0: none. floor: -inf for none. price > 0: the best prefix is
// the one with the most expected - price * seconds instead of the best ratio above the floor.
int64_t jetspec_expert_greedy(int64_t N, int64_t reads, int64_t L, int64_t R, int64_t B, const int64_t* parents,
                              const double* gain, const uint8_t* inc, const int64_t* col, const int64_t* tree_of,
                              double a, double b, double c, double d, int32_t pad, int64_t patience, double floor,
                              double price, int64_t* order, int64_t* best_len) {
    const bool ranked = d > 0;
    const int64_t LR = L * R;
    std::vector<uint8_t> in_union(static_cast<size_t>(reads), 0), frontier(static_cast<size_t>(N), 0);
    for (int64_t v = 0; v < N; ++v)  // the roots are selected from the start
        if (parents[v] < 0)
            for (int64_t j = 0; j < reads; ++j) in_union[j] |= inc[v * reads + j];
    Lists readers, kids;  // readers of each (layer, expert); children of each node
    readers.build(reads, [&](auto emit) {
        for (int64_t v = 0; v < N; ++v)
            for (int64_t j = 0; j < reads; ++j)
                if (inc[v * reads + j]) emit(j, v);
    });
    kids.build(N, [&](auto emit) {
        for (int64_t v = 0; v < N; ++v)
            if (parents[v] >= 0) emit(parents[v], v);
    });
    std::vector<int64_t> new_cnt(static_cast<size_t>(N), 0), rank_cnt, new_rank;
    int64_t used = 0;
    for (int64_t j = 0; j < reads; ++j) used += in_union[j];
    if (ranked) {
        rank_cnt.assign(static_cast<size_t>(LR), 0);
        new_rank.assign(static_cast<size_t>(N * LR), 0);
        for (int64_t j = 0; j < reads; ++j)
            if (in_union[j]) ++rank_cnt[col[j]];
    }
    for (int64_t v = 0; v < N; ++v) {
        for (int64_t j = 0; j < reads; ++j) {
            if (inc[v * reads + j] && !in_union[j]) {
                ++new_cnt[v];
                if (ranked) ++new_rank[v * LR + col[j]];
            }
        }
    }
    for (int64_t v = 0; v < N; ++v)  // the roots' children
        if (parents[v] >= 0 && parents[parents[v]] < 0) frontier[v] = 1;
    std::vector<int64_t> sizes(static_cast<size_t>(B), 1);
    int64_t widest = 1;
    std::vector<int64_t> cur(static_cast<size_t>(ranked ? L : 0));  // per layer: the most loaded rank's experts
    auto most_loaded = [&]() {
        int64_t s = 0;
        for (int64_t l = 0; l < L; ++l) {
            cur[l] = *std::max_element(rank_cnt.begin() + l * R, rank_cnt.begin() + (l + 1) * R);
            s += cur[l];
        }
        return s;
    };
    double seconds = a + b * static_cast<double>(B) + c * static_cast<double>(used) +
                     (ranked ? d * static_cast<double>(most_loaded()) : 0.0);
    const double rows = b * static_cast<double>(B);
    auto ratio_of = [](double e, double s) { return s > 0 ? e / s : std::numeric_limits<double>::infinity(); };
    double expected = static_cast<double>(B);
    // the value each prefix is judged by: its ratio (-1 below the floor), or expected - price x seconds
    const bool priced = price > 0;
    auto value_of = [&](double e, double s) {
        return priced ? e - price * s : (e >= floor ? ratio_of(e, s) : -1.0);
    };
    double best_value = value_of(expected, seconds);
    bool found = priced || best_value >= 0;
    int64_t best = 0, steps = 0;
    std::vector<double> dcost(static_cast<size_t>(N), 0.0);
    while (true) {
        bool any = false;
        if (ranked) most_loaded();
        int64_t free_v = -1, pick = -1;
        double free_best = -1.0, pick_best = -1.0;
        for (int64_t v = 0; v < N; ++v) {
            if (!frontier[v]) continue;
            any = true;
            double dc = c * static_cast<double>(new_cnt[v]);
            if (pad)
                dc += rows * (sizes[tree_of[v]] == widest ? 1.0 : 0.0);
            else
                dc += b;
            if (ranked) {
                int64_t s = 0;
                for (int64_t l = 0; l < L; ++l) {
                    int64_t m = rank_cnt[l * R] + new_rank[v * LR + l * R];
                    for (int64_t r = 1; r < R; ++r) m = std::max(m, rank_cnt[l * R + r] + new_rank[v * LR + l * R + r]);
                    s += m - cur[l];
                }
                dc += d * static_cast<double>(s);
            }
            dcost[v] = dc;
            if (dc <= 0 && gain[v] > 0 && gain[v] > free_best) {  // free and useful: the most probable
                free_best = gain[v];
                free_v = v;
            }
            const double val = gain[v] / (dc > 1e-300 ? dc : 1e-300);
            if (val > pick_best) {
                pick_best = val;
                pick = v;
            }
        }
        if (!any) break;
        const int64_t v = free_v >= 0 ? free_v : pick;
        const double dc = dcost[v];
        // take v: the reads it adds lower every reader's count of new reads
        for (int64_t j = 0; j < reads; ++j) {
            if (!inc[v * reads + j] || in_union[j]) continue;
            for (int64_t i = readers.start[j]; i < readers.start[j + 1]; ++i) {
                const int64_t u = readers.items[i];
                --new_cnt[u];
                if (ranked) --new_rank[u * LR + col[j]];
            }
            if (ranked) ++rank_cnt[col[j]];
            in_union[j] = 1;
        }
        frontier[v] = 0;
        for (int64_t i = kids.start[v]; i < kids.start[v + 1]; ++i) frontier[kids.items[i]] = 1;
        widest = std::max(widest, ++sizes[tree_of[v]]);
        seconds += dc;
        expected += gain[v];
        order[steps++] = v;
        const double value = value_of(expected, seconds);
        if (priced ? value > best_value + 1e-12 * std::abs(best_value)
                   : (value >= 0 && value > best_value * (1 + 1e-12))) {
            best_value = value;
            best = steps;
            found = true;
        } else if (found && patience >= 0 && steps - best >= patience) {
            break;
        }
    }
    *best_len = best;
    return steps;
}

}  // extern "C"
