//! torch's CPU `sort(descending=True)` (not stable) reproduced exactly, so that tie order matches.
//!
//! torch sorts (value, index) pairs with libstdc++'s `std::sort`: introsort (median-of-three pivot moved to the
//! front, unguarded Hoare partition, recursion on the right part, heapsort below the depth limit), stopping at
//! runs of 16 and finishing with one insertion sort. Equal keys end up in an order that depends on all of these
//! details, and `torchvision.ops.batched_nms` returns that order for more than 1,000 boxes on CPU. The comparator
//! puts NaN first, then larger values.

const THRESHOLD: usize = 16;

type Item = (f32, usize);

fn before(a: &Item, b: &Item) -> bool {
    (a.0.is_nan() && !b.0.is_nan()) || a.0 > b.0
}

/// Indices of `keys`, sorted as `torch.sort(keys, descending=True)` on CPU returns them.
pub(crate) fn torch_sort_descending(keys: &[f32]) -> Vec<usize> {
    let mut v: Vec<Item> = keys.iter().copied().zip(0..).collect();
    let n = v.len();
    if n > 1 {
        let depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
        introsort_loop(&mut v, 0, n, depth);
        final_insertion_sort(&mut v, 0, n);
    }
    v.into_iter().map(|(_, i)| i).collect()
}

fn introsort_loop(v: &mut [Item], first: usize, mut last: usize, mut depth: usize) {
    while last - first > THRESHOLD {
        if depth == 0 {
            heap_sort(&mut v[first..last]);
            return;
        }
        depth -= 1;
        let mid = first + (last - first) / 2;
        move_median_to_first(v, first, first + 1, mid, last - 1);
        let cut = unguarded_partition(v, first + 1, last, first);
        introsort_loop(v, cut, last, depth);
        last = cut;
    }
}

fn move_median_to_first(v: &mut [Item], result: usize, a: usize, b: usize, c: usize) {
    let pick = if before(&v[a], &v[b]) {
        if before(&v[b], &v[c]) {
            b
        } else if before(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if before(&v[a], &v[c]) {
        a
    } else if before(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(result, pick);
}

fn unguarded_partition(v: &mut [Item], mut first: usize, mut last: usize, pivot: usize) -> usize {
    loop {
        while before(&v[first], &v[pivot]) {
            first += 1;
        }
        last -= 1;
        while before(&v[pivot], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn unguarded_linear_insert(v: &mut [Item], mut last: usize) {
    let val = v[last];
    while before(&val, &v[last - 1]) {
        v[last] = v[last - 1];
        last -= 1;
    }
    v[last] = val;
}

fn insertion_sort(v: &mut [Item], first: usize, last: usize) {
    for i in first + 1..last {
        if before(&v[i], &v[first]) {
            let val = v[i];
            v.copy_within(first..i, first + 1);
            v[first] = val;
        } else {
            unguarded_linear_insert(v, i);
        }
    }
}

fn final_insertion_sort(v: &mut [Item], first: usize, last: usize) {
    if last - first > THRESHOLD {
        insertion_sort(v, first, first + THRESHOLD);
        for i in first + THRESHOLD..last {
            unguarded_linear_insert(v, i);
        }
    } else {
        insertion_sort(v, first, last);
    }
}

/// libstdc++'s `__partial_sort(first, last, last)`: `make_heap` then `sort_heap`.
fn heap_sort(v: &mut [Item]) {
    let len = v.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = v[parent];
        adjust_heap(v, parent, len, value);
        if parent == 0 {
            break;
        }
        parent -= 1;
    }
    let mut last = len;
    while last > 1 {
        last -= 1;
        let value = v[last];
        v[last] = v[0];
        adjust_heap(&mut v[..last], 0, last, value);
    }
}

fn adjust_heap(v: &mut [Item], mut hole: usize, len: usize, value: Item) {
    let top = hole;
    let mut child = hole;
    while child < (len.saturating_sub(1)) / 2 {
        child = 2 * (child + 1);
        if before(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len.is_multiple_of(2) && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    // push_heap
    while hole > top {
        let parent = (hole - 1) / 2;
        if before(&v[parent], &value) {
            v[hole] = v[parent];
            hole = parent;
        } else {
            break;
        }
    }
    v[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_follow_torch() {
        // torch.tensor([1., .5] * 20).sort(descending=True)[1][:12] (torch 2.x, CPU)
        let keys: Vec<f32> = (0..40).map(|i| if i % 2 == 0 { 1.0 } else { 0.5 }).collect();
        assert_eq!(
            torch_sort_descending(&keys)[..12],
            [0, 26, 24, 28, 22, 20, 30, 18, 16, 32, 14, 12]
        );
        // up to 16 elements it is a plain (stable) insertion sort
        let keys: Vec<f32> = (0..10).map(|i| if i % 2 == 0 { 1.0 } else { 0.5 }).collect();
        assert_eq!(torch_sort_descending(&keys), [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]);
        assert!(torch_sort_descending(&[]).is_empty());
    }

    #[test]
    fn heap_fallback_sorts() {
        let mut v: Vec<Item> = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
            .iter()
            .copied()
            .zip(0..)
            .collect();
        heap_sort(&mut v);
        let keys: Vec<f32> = v.iter().map(|x| x.0).collect();
        // a descending comparator builds a min-heap, so sort_heap leaves the keys in descending order
        assert_eq!(keys, [9.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 1.0]);
    }
}
