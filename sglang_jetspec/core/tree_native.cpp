// The best-first draft trees of core/tree.py in C++, for a whole batch in one call: the plain
// one (`_best_first`) and the n-gram-prior one (`_best_first_rescored`). Each must give exactly
// the Python builder's trees: the same float64 additions in the same order (no multiplications,
// built with -ffp-contract=off), and the same pop order (plain: score, then the order the
// candidates were pushed in; prior: the same stable descending sort of each node's candidates,
// then score, parent node, rank). tests/test_tree_batch.py compares them on random inputs.
//
// Compiled and loaded by core/tree_native.py through ctypes (no Python or torch headers).

#include <algorithm>
#include <cstdint>
#include <queue>
#include <vector>

namespace {

// An open-addressing hash table int64 key (>= 0) -> double: one probe run in a flat array per
// lookup, where a node-based std::unordered_map costs two dependent cache misses.
struct FlatMap {
    std::vector<int64_t> keys;  // -1 = empty slot
    std::vector<double> vals;
    uint64_t mask = 0;
    int shift = 64;

    void build(const int64_t* ks, const double* vs, int64_t n) {
        uint64_t cap = 16;
        while (cap < static_cast<uint64_t>(n) * 2) cap <<= 1;
        keys.assign(cap, -1);
        vals.assign(cap, 0.0);
        mask = cap - 1;
        shift = 64 - __builtin_ctzll(cap);
        for (int64_t i = 0; i < n; ++i) {
            uint64_t at = slot(ks[i]);
            while (keys[at] != -1 && keys[at] != ks[i]) at = (at + 1) & mask;
            keys[at] = ks[i];
            vals[at] = vs[i];
        }
    }
    uint64_t slot(int64_t key) const { return (static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull) >> shift; }
    // the value of `key`, or nullptr
    const double* find(int64_t key) const {
        if (keys.empty() || key < 0) return nullptr;
        for (uint64_t at = slot(key);; at = (at + 1) & mask) {
            if (keys[at] == key) return &vals[at];
            if (keys[at] == -1) return nullptr;
        }
    }
};

struct Prior {
    int64_t vocab;
    bool zero;  // both weights 0: every bonus is 0
    bool use3;  // weight3 != 0
    FlatMap pair2;  // p * V + t -> bigram term
    FlatMap ctx2;   // p -> the term of a successor never counted after p
    FlatMap pair3;  // (g * V + p) * V + t -> trigram term
    FlatMap ctx3;   // g * V + p -> the trigram term of an unseen successor
};

// Node 0 of every tree: the root (the last committed token), depth 0, score 0.
void put_root(int64_t root, int64_t* tokens, int64_t* parents, int64_t* depths, double* scores, int64_t* ranks) {
    tokens[0] = root;
    parents[0] = -1;
    depths[0] = 0;
    scores[0] = 0.0;
    ranks[0] = 0;
}

struct Kid {
    double inc;
    int64_t token;
};

struct Entry {  // a frontier node: the next child `rank` of `parent`, at -score `neg`
    double neg;
    int64_t parent;
    int64_t rank;
};

struct Later {  // std::priority_queue pops the largest: make the smallest (neg, parent, rank) largest
    bool operator()(const Entry& a, const Entry& b) const {
        if (a.neg != b.neg) return a.neg > b.neg;
        if (a.parent != b.parent) return a.parent > b.parent;
        return a.rank > b.rank;
    }
};

// One request's tree; writes its nodes at out[0..size) and returns size.
int64_t build_one(const Prior& pr, const float* vals, const int64_t* ids, int64_t k, int64_t root,
                  int64_t budget, int64_t w, int64_t max_depth, int64_t prev, int64_t* tokens,
                  int64_t* parents, int64_t* depths, double* scores, int64_t* ranks) {
    std::vector<std::vector<Kid>> kids(static_cast<size_t>(budget));
    std::priority_queue<Entry, std::vector<Entry>, Later> heap;
    std::vector<double> inc(static_cast<size_t>(k));
    std::vector<int64_t> order(static_cast<size_t>(k));
    const int64_t V = pr.vocab;
    int64_t n = 1;
    put_root(root, tokens, parents, depths, scores, ranks);

    auto open_children = [&](int64_t node) {
        const int64_t grand = node ? tokens[parents[node]] : prev;  // -1 = none
        const int64_t parent = tokens[node];
        const float* row_vals = vals + depths[node] * k;
        const int64_t* row_ids = ids + depths[node] * k;
        // a token outside the prior's vocabulary was never counted (keys are only unique inside it)
        auto counted = [V](int64_t t) { return t >= 0 && t < V; };
        const double* unseen2 = pr.zero || !counted(parent) ? nullptr : pr.ctx2.find(parent);  // nullptr: no opinion
        const double* unseen3 = unseen2 && pr.use3 && counted(grand) ? pr.ctx3.find(grand * V + parent) : nullptr;
        const int64_t base2 = parent * V, base3 = (grand * V + parent) * V;
        for (int64_t j = 0; j < k; ++j) {
            double bonus = 0.0;
            if (unseen2) {
                const bool known = counted(row_ids[j]);
                const double* t2 = known ? pr.pair2.find(base2 + row_ids[j]) : nullptr;
                bonus = t2 ? *t2 : *unseen2;
                if (unseen3) {
                    const double* t3 = known ? pr.pair3.find(base3 + row_ids[j]) : nullptr;
                    bonus = bonus + (t3 ? *t3 : *unseen3);
                }
            }
            const double x = static_cast<double>(row_vals[j]) + bonus;
            inc[j] = x < 0.0 ? x : 0.0;
            order[j] = j;
        }
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return inc[a] > inc[b]; });
        std::vector<Kid>& mine = kids[node];
        mine.resize(static_cast<size_t>(w));
        for (int64_t r = 0; r < w; ++r) mine[r] = Kid{inc[order[r]], row_ids[order[r]]};
        heap.push(Entry{-(scores[node] + mine[0].inc), node, 0});
    };

    if (budget > 1) open_children(0);
    while (!heap.empty() && n < budget) {
        const Entry e = heap.top();
        heap.pop();
        const int64_t node = n++;
        const Kid& kid = kids[e.parent][e.rank];
        tokens[node] = kid.token;
        parents[node] = e.parent;
        depths[node] = depths[e.parent] + 1;
        scores[node] = -e.neg;
        ranks[node] = e.rank;
        if (e.rank + 1 < w)
            heap.push(Entry{-(scores[e.parent] + kids[e.parent][e.rank + 1].inc), e.parent, e.rank + 1});
        if (depths[node] < max_depth) open_children(node);
    }
    return n;
}

struct PlainEntry {  // the next candidate `rank` at `depth` under `parent`, pushed `counter`-th
    double neg;
    int64_t counter;
    int64_t parent;
    int64_t depth;
    int64_t rank;
};

struct PlainLater {  // Python's heap of (-score, counter, ...): counters are unique, so no further key
    bool operator()(const PlainEntry& a, const PlainEntry& b) const {
        if (a.neg != b.neg) return a.neg > b.neg;
        return a.counter > b.counter;
    }
};

// One request's plain tree (`_best_first`): the heap walk over its per-depth top-w table.
int64_t build_plain_one(const float* vals, const int64_t* ids, int64_t k, int64_t root, int64_t budget,
                        int64_t w, int64_t max_depth, int64_t* tokens, int64_t* parents, int64_t* depths,
                        double* scores, int64_t* ranks) {
    std::priority_queue<PlainEntry, std::vector<PlainEntry>, PlainLater> heap;
    int64_t counter = 0;
    auto push = [&](int64_t parent, int64_t depth, int64_t rank) {
        const double s = scores[parent] + static_cast<double>(vals[(depth - 1) * k + rank]);
        heap.push(PlainEntry{-s, counter++, parent, depth, rank});
    };
    int64_t n = 1;
    put_root(root, tokens, parents, depths, scores, ranks);
    if (budget > 1) push(0, 1, 0);
    while (!heap.empty() && n < budget) {
        const PlainEntry e = heap.top();
        heap.pop();
        const int64_t node = n++;
        tokens[node] = ids[(e.depth - 1) * k + e.rank];
        parents[node] = e.parent;
        depths[node] = e.depth;
        scores[node] = -e.neg;
        ranks[node] = e.rank;
        if (e.rank + 1 < w) push(e.parent, e.depth, e.rank + 1);  // lazily expose the next sibling
        if (e.depth < max_depth) push(node, e.depth + 1, 0);  // and the best child
    }
    return n;
}

}  // namespace

extern "C" {

void* jetspec_prior_new(int64_t vocab, int32_t zero, int32_t use3, const int64_t* k2, const double* v2,
                        int64_t n2, const int64_t* kc2, const double* vc2, int64_t nc2, const int64_t* k3,
                        const double* v3, int64_t n3, const int64_t* kc3, const double* vc3, int64_t nc3) {
    Prior* p = new Prior();
    p->vocab = vocab;
    p->zero = zero != 0;
    p->use3 = use3 != 0;
    p->pair2.build(k2, v2, n2);
    p->ctx2.build(kc2, vc2, nc2);
    p->pair3.build(k3, v3, n3);
    p->ctx3.build(kc3, vc3, nc3);
    return p;
}

void jetspec_prior_free(void* prior) { delete static_cast<Prior*>(prior); }

// b requests; vals/ids [b, rows, k] row-major; widths already capped at k; prevs -1 = none;
// outputs [b, stride] row-major (stride >= every budget) and sizes [b].
void jetspec_build_trees(const void* prior, int64_t b, int64_t rows, int64_t k, const float* vals,
                         const int64_t* ids, const int64_t* roots, const int64_t* budgets, const int64_t* widths,
                         const int64_t* max_depths, const int64_t* prevs, int64_t stride, int64_t* tokens,
                         int64_t* parents, int64_t* depths, double* scores, int64_t* ranks, int64_t* sizes) {
    const Prior& pr = *static_cast<const Prior*>(prior);
    for (int64_t i = 0; i < b; ++i) {
        const int64_t o = i * stride;
        sizes[i] = build_one(pr, vals + i * rows * k, ids + i * rows * k, k, roots[i], budgets[i], widths[i],
                             max_depths[i], prevs[i], tokens + o, parents + o, depths + o, scores + o, ranks + o);
    }
}

// The plain trees of b requests, laid out as jetspec_build_trees'.
void jetspec_build_plain_trees(int64_t b, int64_t rows, int64_t k, const float* vals, const int64_t* ids,
                               const int64_t* roots, const int64_t* budgets, const int64_t* widths,
                               const int64_t* max_depths, int64_t stride, int64_t* tokens, int64_t* parents,
                               int64_t* depths, double* scores, int64_t* ranks, int64_t* sizes) {
    for (int64_t i = 0; i < b; ++i) {
        const int64_t o = i * stride;
        sizes[i] = build_plain_one(vals + i * rows * k, ids + i * rows * k, k, roots[i], budgets[i], widths[i],
                                   max_depths[i], tokens + o, parents + o, depths + o, scores + o, ranks + o);
    }
}

}  // extern "C"
