//! A misbehaving link: datagrams overtaking each other and arriving twice. The control
//! channel must still bring the tunnel up and data must get through, whatever the seed.

use std::time::Duration;

use super::pair::{Pair, tag_of};

fn reorder_and_dup(seed: u64) -> Pair {
    let mut p = Pair::new(seed.is_multiple_of(2));
    p.seed(seed);
    p.link.reorder_percent = 30;
    p.link.reorder_delay = Duration::from_millis(40);
    p.link.dup_percent = 20;
    p
}

#[test]
fn handshake_and_data_survive_reordering_and_duplication() {
    let mut duplicates_seen = 0;
    for seed in 0..200 {
        let mut p = reorder_and_dup(seed);
        assert!(
            p.run_until(Duration::from_secs(30), super::pair::connected),
            "seed={seed} {:?} {:?}",
            p.server_events,
            p.client_events
        );
        for tag in 0..10 {
            p.send_up(tag);
            p.send_down(tag);
        }
        p.run_for(Duration::from_millis(200));
        // Duplicates are dropped by the replay window, reordered packets still accepted.
        let mut up: Vec<u32> = p.server_rx.iter().map(|d| tag_of(d)).collect();
        let mut down: Vec<u32> = p.client_rx.iter().map(|d| tag_of(d)).collect();
        up.sort();
        down.sort();
        assert_eq!(up, (0..10).collect::<Vec<_>>(), "seed={seed}");
        assert_eq!(down, (0..10).collect::<Vec<_>>(), "seed={seed}");
        assert!(
            p.server_data_errors.iter().all(|e| e.contains("replay")),
            "seed={seed} {:?}",
            p.server_data_errors
        );
        duplicates_seen += p.server_data_errors.len();
    }
    // The link really did duplicate data packets (and the replay window caught them).
    assert!(duplicates_seen > 50, "{duplicates_seen}");
}

#[test]
fn handshake_survives_reordering_duplication_and_loss() {
    for seed in 0..40 {
        let mut p = reorder_and_dup(seed);
        p.link.loss_percent = 15;
        assert!(
            p.run_until(Duration::from_secs(60), super::pair::connected),
            "seed={seed} {:?} {:?}",
            p.server_events,
            p.client_events
        );
    }
}
