//! The behaviour every driver must show, as one suite each driver's tests run.
//! It panics on the first difference, naming the check.

use bytes::Bytes;
use futures_util::TryStreamExt;

use berth_types::{Digest, RepoName, Tag};

use crate::{layout, StorageDriver, StorageError};

async fn read_all(d: &dyn StorageDriver, p: &crate::StoragePath, offset: u64, len: Option<u64>) -> Vec<u8> {
    let s = d.reader(p, offset, len).await.expect("reader opens");
    let chunks: Vec<Bytes> = s.try_collect().await.expect("stream reads");
    chunks.concat()
}

/// Runs every check against `d`, which must be empty.
pub async fn run_all(d: &dyn StorageDriver) {
    let name = RepoName::parse("conformance/repo").expect("valid name");
    let digest = Digest::of_bytes(b"hello");
    let blob = layout::blob_data(&digest);

    // Missing files are NotFound for every read operation.
    assert!(d.get_content(&blob).await.unwrap_err().is_not_found(), "get_content on missing file");
    assert!(d.stat(&blob).await.unwrap_err().is_not_found(), "stat on missing file");
    assert!(d.reader(&blob, 0, None).await.err().expect("reader on missing file fails").is_not_found());
    assert!(d.list(&layout::repositories_root()).await.unwrap_err().is_not_found(), "list of missing dir");
    assert!(d.delete(&blob).await.unwrap_err().is_not_found(), "delete of missing file");

    // Whole-file put and get, overwrite replaces.
    d.put_content(&blob, Bytes::from_static(b"hello")).await.expect("put_content");
    assert_eq!(&d.get_content(&blob).await.expect("get")[..], b"hello");
    let info = d.stat(&blob).await.expect("stat");
    assert_eq!((info.size, info.is_dir), (5, false));
    let link = layout::layer_link(&name, &digest);
    d.put_content(&link, Bytes::from_static(b"old")).await.expect("put link");
    d.put_content(&link, layout::link_content(&digest)).await.expect("overwrite link");
    assert_eq!(layout::parse_link(&d.get_content(&link).await.expect("get link")), Some(digest.clone()));

    // Ranged reads.
    assert_eq!(read_all(d, &blob, 0, None).await, b"hello");
    assert_eq!(read_all(d, &blob, 1, Some(3)).await, b"ell");
    assert_eq!(read_all(d, &blob, 5, None).await, b"");
    assert!(matches!(d.reader(&blob, 6, None).await, Err(StorageError::InvalidOffset { .. })), "read past end");
    assert!(matches!(d.reader(&blob, 2, Some(10)).await, Err(StorageError::InvalidOffset { .. })), "range past end");

    // Directories: stat and list show children, sorted.
    let dir = d.stat(&layout::repo_root(&name)).await.expect("stat dir");
    assert!(dir.is_dir, "repository root is a directory");
    let t1 = Tag::parse("b").expect("tag");
    let t2 = Tag::parse("a").expect("tag");
    d.put_content(&layout::tag_current_link(&name, &t1), layout::link_content(&digest)).await.expect("tag b");
    d.put_content(&layout::tag_current_link(&name, &t2), layout::link_content(&digest)).await.expect("tag a");
    assert_eq!(d.list(&layout::tags_dir(&name)).await.expect("list tags"), vec!["a", "b"]);
    let mut repos = d.list(&layout::repositories_root()).await.expect("list repos");
    repos.sort();
    assert_eq!(repos, vec!["conformance"]);

    // Writers append at an offset, discard bytes past it, and refuse gaps;
    // a closed writer's state lets the next one continue.
    let id = uuid::Uuid::new_v4();
    let up = layout::upload_data(&name, &id);
    let mut w = d.writer(&up, 0, None).await.expect("writer at 0");
    w.write(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"def")]).await.expect("write");
    assert_eq!(w.commit().await.expect("commit"), 6);
    assert_eq!(read_all(d, &up, 0, None).await, b"abcdef");
    let mut w = d.writer(&up, 6, None).await.expect("writer at 6");
    w.write(vec![Bytes::from_static(b"ghi")]).await.expect("write");
    drop(w); // interrupted: never committed
    let mut w = d.writer(&up, 6, None).await.expect("writer at 6 again");
    w.write(vec![Bytes::from_static(b"jk")]).await.expect("write");
    let closed = w.close().await.expect("close");
    assert_eq!(closed.size, 8, "close reports the size");
    let mut w = d.writer(&up, 8, closed.state.as_deref()).await.expect("writer continues a closed one");
    w.write(vec![Bytes::from_static(b"lm")]).await.expect("write");
    assert_eq!(w.commit().await.expect("commit"), 10);
    assert_eq!(read_all(d, &up, 0, None).await, b"abcdefjklm");
    let mut w = d.writer(&up, 6, None).await.expect("writer resumes at 6");
    w.write(vec![Bytes::from_static(b"XY")]).await.expect("write");
    assert_eq!(w.commit().await.expect("commit"), 8);
    assert_eq!(read_all(d, &up, 0, None).await, b"abcdefXY");
    assert!(matches!(d.writer(&up, 100, None).await, Err(StorageError::InvalidOffset { .. })), "writer past end");

    // Rename moves atomically and replaces the target.
    let target = layout::blob_data(&Digest::of_bytes(b"abcdefXY"));
    d.put_content(&target, Bytes::from_static(b"stale")).await.expect("pre-existing target");
    d.rename(&up, &target).await.expect("rename");
    assert!(d.stat(&up).await.unwrap_err().is_not_found(), "source gone after rename");
    assert_eq!(&d.get_content(&target).await.expect("target")[..], b"abcdefXY");
    assert!(d.rename(&up, &target).await.unwrap_err().is_not_found(), "rename of missing file");

    // Large writes in many chunks read back identically, also when written
    // by several writers in turn, each continuing from the last one's state
    // (as chunks of one upload arrive), and when the last writer starts
    // again from an earlier offset (a retried chunk).
    let big: Vec<u8> = (0..13 * 1024 * 1024 + 17).map(|i| (i * 7 % 251) as u8).collect();
    let bp = layout::upload_data(&name, &uuid::Uuid::new_v4());
    let mut w = d.writer(&bp, 0, None).await.expect("big writer");
    for c in big[..3 * 1024 * 1024].chunks(100_000) {
        w.write(vec![Bytes::copy_from_slice(c)]).await.expect("big write");
    }
    assert_eq!(w.commit().await.expect("big commit"), 3 * 1024 * 1024);
    assert_eq!(read_all(d, &bp, 1_000_000, Some(2_000_000)).await, &big[1_000_000..3_000_000]);
    let bp = layout::upload_data(&name, &uuid::Uuid::new_v4());
    let cuts = [0, 1_500_000, 7_000_000, 11_000_000, big.len()];
    let mut state: Option<String> = None;
    for win in cuts.windows(2) {
        let mut w = d.writer(&bp, win[0] as u64, state.as_deref()).await.expect("chunk writer");
        for c in big[win[0]..win[1]].chunks(300_000) {
            w.write(vec![Bytes::copy_from_slice(c)]).await.expect("chunk write");
        }
        if win[1] == big.len() {
            // An interrupted last chunk, then its retry.
            drop(w);
            let mut w = d.writer(&bp, win[0] as u64, state.as_deref()).await.expect("retry writer");
            w.write(vec![Bytes::copy_from_slice(&big[win[0]..])]).await.expect("retry write");
            assert_eq!(w.commit().await.expect("chunked commit"), big.len() as u64);
        } else {
            let closed = w.close().await.expect("chunk close");
            assert_eq!(closed.size, win[1] as u64);
            state = closed.state;
        }
    }
    assert_eq!(d.stat(&bp).await.expect("stat chunked").size, big.len() as u64);
    assert!(read_all(d, &bp, 0, None).await == big, "chunked upload reads back identically");
    assert!(
        read_all(d, &bp, 6_000_000, Some(5_000_000)).await == big[6_000_000..11_000_000],
        "ranged read across parts"
    );
    // Given-up data is released.
    let gp = layout::upload_data(&name, &uuid::Uuid::new_v4());
    let mut w = d.writer(&gp, 0, None).await.expect("writer");
    w.write(vec![Bytes::copy_from_slice(&big[..6 * 1024 * 1024])]).await.expect("write");
    let closed = w.close().await.expect("close");
    if let Some(st) = &closed.state {
        d.abandon(&gp, st).await.expect("abandon");
    }
    match d.delete(&gp).await {
        Err(e) if !e.is_not_found() => panic!("delete of abandoned data: {e}"),
        _ => {}
    }

    // Recursive delete of a directory.
    d.delete(&layout::repo_root(&name)).await.expect("delete repo dir");
    assert!(d.stat(&layout::tag_current_link(&name, &t1)).await.unwrap_err().is_not_found(), "tree removed");
    assert!(d.list(&layout::tags_dir(&name)).await.unwrap_err().is_not_found(), "dir removed");
    d.delete(&blob).await.expect("delete file");
    assert!(d.get_content(&blob).await.unwrap_err().is_not_found(), "file removed");

    // Many at once: files and trees, some already gone.
    let other = RepoName::parse("conformance/other").unwrap();
    d.put_content(&blob, Bytes::from_static(b"again")).await.expect("put");
    d.put_content(&layout::tag_current_link(&other, &t1), Bytes::from_static(b"x")).await.expect("put");
    let gone = layout::blob_data(&Digest::of_bytes(b"never written"));
    d.delete_many(&[blob.clone(), layout::repo_root(&other), gone]).await.expect("delete many");
    assert!(d.stat(&blob).await.unwrap_err().is_not_found(), "file removed");
    assert!(d.list(&layout::repo_root(&other)).await.unwrap_err().is_not_found(), "tree removed");
}
