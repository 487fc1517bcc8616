//! Which K nodes of a fleet an image is warmed on: rendezvous (highest random weight) hashing
//! of the image id over the nodes' URLs. The same image lands on the same nodes from any
//! client, and a node joining or leaving moves only the images it wins or held.

/// The `k` nodes of `nodes` that `image` is placed on, best first (all of them when `k` is not
/// smaller than the fleet).
pub fn nodes_for(nodes: &[String], image: &str, k: usize) -> Vec<String> {
    let mut scored: Vec<(u64, &String)> = nodes
        .iter()
        .map(|node| (weight(node, image), node))
        .collect();
    // Ties (a collision) fall back to the URL, so every client picks the same nodes.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(k)
        .map(|(_, node)| node.clone())
        .collect()
}

/// The weight of `node` for `image`: a stable 64-bit hash of both (FNV-1a, then a mixing step
/// so that similar URLs spread), the same on every machine and every release.
fn weight(node: &str, image: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0]).chain(image.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("http://10.0.0.{i}:9292")).collect()
    }

    #[test]
    fn the_same_image_lands_on_the_same_nodes_in_any_order() {
        let nodes = fleet(8);
        let mut reversed = nodes.clone();
        reversed.reverse();
        let image = "6f0e8d4c-3b2a-4c1d-9e8f-7a6b5c4d3e2f";
        let chosen = nodes_for(&nodes, image, 2);
        assert_eq!(chosen.len(), 2);
        assert_ne!(chosen[0], chosen[1]);
        assert_eq!(nodes_for(&reversed, image, 2), chosen);
        assert_eq!(nodes_for(&nodes, image, 1), chosen[..1]);
        assert_eq!(nodes_for(&nodes, image, 20).len(), 8);
    }

    #[test]
    fn images_spread_over_the_fleet_and_a_leaving_node_moves_only_its_own() {
        let nodes = fleet(8);
        let images: Vec<String> = (0..4000).map(|i| format!("image-{i}")).collect();
        let mut first = std::collections::HashMap::<String, usize>::new();
        for image in &images {
            *first
                .entry(nodes_for(&nodes, image, 1).remove(0))
                .or_default() += 1;
        }
        // Each node wins about 1/8 of the images (500 each).
        for (node, won) in &first {
            assert!((350..650).contains(won), "{node} won {won} of 4000");
        }
        let fewer: Vec<String> = nodes[1..].to_vec();
        let moved = images
            .iter()
            .filter(|image| {
                let before = nodes_for(&nodes, image, 1).remove(0);
                before != nodes[0] && nodes_for(&fewer, image, 1)[0] != before
            })
            .count();
        assert_eq!(moved, 0, "only the images of the node that left move");
    }
}
