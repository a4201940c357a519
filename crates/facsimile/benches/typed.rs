//! Typed updates: `update` of one field of a 1,000-field struct, against
//! re-sending the whole struct, on two nodes of a `LocalNetwork` (so every
//! figure includes encoding, delivery and the other node applying it).
//!
//! ```sh
//! cargo bench -p facsimile --bench typed
//! ```
//!
//! Cases:
//! - `update_one_field`: `node.update(|w: &mut Wide| w.f500 += 1)` — reads
//!   the struct from the store, runs the closure, diffs, sends one write;
//! - `set_root_from_one_field`: the program holds the struct, changes one
//!   field and calls `set_root_from` — diffs without reading `T`;
//! - `resend_struct`: the program re-sends the struct as new objects
//!   (`set_root(Input::from_serialize(&w)?)`), what a system without a diff
//!   must do;
//! - `root_as`: reading the struct alone, for the breakdown.
//!
//! Before the timings it prints the bytes each way puts on the wire.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{Criterion, criterion_group, criterion_main};
use facsimile::{Input, LocalNetwork, Node};
use serde::{Deserialize, Serialize};

macro_rules! wide {
    ($($f:ident)*) => {
        /// A struct of 1,000 integer fields.
        #[derive(Serialize, Deserialize, Clone)]
        struct Wide {
            $($f: i64,)*
        }

        impl Wide {
            fn new() -> Self {
                Wide { $($f: 0,)* }
            }
        }
    };
}

wide!(
    f000 f001 f002 f003 f004 f005 f006 f007 f008 f009 f010 f011 f012 f013 f014 f015 f016 f017 f018 f019
    f020 f021 f022 f023 f024 f025 f026 f027 f028 f029 f030 f031 f032 f033 f034 f035 f036 f037 f038 f039
    f040 f041 f042 f043 f044 f045 f046 f047 f048 f049 f050 f051 f052 f053 f054 f055 f056 f057 f058 f059
    f060 f061 f062 f063 f064 f065 f066 f067 f068 f069 f070 f071 f072 f073 f074 f075 f076 f077 f078 f079
    f080 f081 f082 f083 f084 f085 f086 f087 f088 f089 f090 f091 f092 f093 f094 f095 f096 f097 f098 f099
    f100 f101 f102 f103 f104 f105 f106 f107 f108 f109 f110 f111 f112 f113 f114 f115 f116 f117 f118 f119
    f120 f121 f122 f123 f124 f125 f126 f127 f128 f129 f130 f131 f132 f133 f134 f135 f136 f137 f138 f139
    f140 f141 f142 f143 f144 f145 f146 f147 f148 f149 f150 f151 f152 f153 f154 f155 f156 f157 f158 f159
    f160 f161 f162 f163 f164 f165 f166 f167 f168 f169 f170 f171 f172 f173 f174 f175 f176 f177 f178 f179
    f180 f181 f182 f183 f184 f185 f186 f187 f188 f189 f190 f191 f192 f193 f194 f195 f196 f197 f198 f199
    f200 f201 f202 f203 f204 f205 f206 f207 f208 f209 f210 f211 f212 f213 f214 f215 f216 f217 f218 f219
    f220 f221 f222 f223 f224 f225 f226 f227 f228 f229 f230 f231 f232 f233 f234 f235 f236 f237 f238 f239
    f240 f241 f242 f243 f244 f245 f246 f247 f248 f249 f250 f251 f252 f253 f254 f255 f256 f257 f258 f259
    f260 f261 f262 f263 f264 f265 f266 f267 f268 f269 f270 f271 f272 f273 f274 f275 f276 f277 f278 f279
    f280 f281 f282 f283 f284 f285 f286 f287 f288 f289 f290 f291 f292 f293 f294 f295 f296 f297 f298 f299
    f300 f301 f302 f303 f304 f305 f306 f307 f308 f309 f310 f311 f312 f313 f314 f315 f316 f317 f318 f319
    f320 f321 f322 f323 f324 f325 f326 f327 f328 f329 f330 f331 f332 f333 f334 f335 f336 f337 f338 f339
    f340 f341 f342 f343 f344 f345 f346 f347 f348 f349 f350 f351 f352 f353 f354 f355 f356 f357 f358 f359
    f360 f361 f362 f363 f364 f365 f366 f367 f368 f369 f370 f371 f372 f373 f374 f375 f376 f377 f378 f379
    f380 f381 f382 f383 f384 f385 f386 f387 f388 f389 f390 f391 f392 f393 f394 f395 f396 f397 f398 f399
    f400 f401 f402 f403 f404 f405 f406 f407 f408 f409 f410 f411 f412 f413 f414 f415 f416 f417 f418 f419
    f420 f421 f422 f423 f424 f425 f426 f427 f428 f429 f430 f431 f432 f433 f434 f435 f436 f437 f438 f439
    f440 f441 f442 f443 f444 f445 f446 f447 f448 f449 f450 f451 f452 f453 f454 f455 f456 f457 f458 f459
    f460 f461 f462 f463 f464 f465 f466 f467 f468 f469 f470 f471 f472 f473 f474 f475 f476 f477 f478 f479
    f480 f481 f482 f483 f484 f485 f486 f487 f488 f489 f490 f491 f492 f493 f494 f495 f496 f497 f498 f499
    f500 f501 f502 f503 f504 f505 f506 f507 f508 f509 f510 f511 f512 f513 f514 f515 f516 f517 f518 f519
    f520 f521 f522 f523 f524 f525 f526 f527 f528 f529 f530 f531 f532 f533 f534 f535 f536 f537 f538 f539
    f540 f541 f542 f543 f544 f545 f546 f547 f548 f549 f550 f551 f552 f553 f554 f555 f556 f557 f558 f559
    f560 f561 f562 f563 f564 f565 f566 f567 f568 f569 f570 f571 f572 f573 f574 f575 f576 f577 f578 f579
    f580 f581 f582 f583 f584 f585 f586 f587 f588 f589 f590 f591 f592 f593 f594 f595 f596 f597 f598 f599
    f600 f601 f602 f603 f604 f605 f606 f607 f608 f609 f610 f611 f612 f613 f614 f615 f616 f617 f618 f619
    f620 f621 f622 f623 f624 f625 f626 f627 f628 f629 f630 f631 f632 f633 f634 f635 f636 f637 f638 f639
    f640 f641 f642 f643 f644 f645 f646 f647 f648 f649 f650 f651 f652 f653 f654 f655 f656 f657 f658 f659
    f660 f661 f662 f663 f664 f665 f666 f667 f668 f669 f670 f671 f672 f673 f674 f675 f676 f677 f678 f679
    f680 f681 f682 f683 f684 f685 f686 f687 f688 f689 f690 f691 f692 f693 f694 f695 f696 f697 f698 f699
    f700 f701 f702 f703 f704 f705 f706 f707 f708 f709 f710 f711 f712 f713 f714 f715 f716 f717 f718 f719
    f720 f721 f722 f723 f724 f725 f726 f727 f728 f729 f730 f731 f732 f733 f734 f735 f736 f737 f738 f739
    f740 f741 f742 f743 f744 f745 f746 f747 f748 f749 f750 f751 f752 f753 f754 f755 f756 f757 f758 f759
    f760 f761 f762 f763 f764 f765 f766 f767 f768 f769 f770 f771 f772 f773 f774 f775 f776 f777 f778 f779
    f780 f781 f782 f783 f784 f785 f786 f787 f788 f789 f790 f791 f792 f793 f794 f795 f796 f797 f798 f799
    f800 f801 f802 f803 f804 f805 f806 f807 f808 f809 f810 f811 f812 f813 f814 f815 f816 f817 f818 f819
    f820 f821 f822 f823 f824 f825 f826 f827 f828 f829 f830 f831 f832 f833 f834 f835 f836 f837 f838 f839
    f840 f841 f842 f843 f844 f845 f846 f847 f848 f849 f850 f851 f852 f853 f854 f855 f856 f857 f858 f859
    f860 f861 f862 f863 f864 f865 f866 f867 f868 f869 f870 f871 f872 f873 f874 f875 f876 f877 f878 f879
    f880 f881 f882 f883 f884 f885 f886 f887 f888 f889 f890 f891 f892 f893 f894 f895 f896 f897 f898 f899
    f900 f901 f902 f903 f904 f905 f906 f907 f908 f909 f910 f911 f912 f913 f914 f915 f916 f917 f918 f919
    f920 f921 f922 f923 f924 f925 f926 f927 f928 f929 f930 f931 f932 f933 f934 f935 f936 f937 f938 f939
    f940 f941 f942 f943 f944 f945 f946 f947 f948 f949 f950 f951 f952 f953 f954 f955 f956 f957 f958 f959
    f960 f961 f962 f963 f964 f965 f966 f967 f968 f969 f970 f971 f972 f973 f974 f975 f976 f977 f978 f979
    f980 f981 f982 f983 f984 f985 f986 f987 f988 f989 f990 f991 f992 f993 f994 f995 f996 f997 f998 f999
);

/// Two nodes holding a `Wide` root.
fn pair() -> (LocalNetwork, Node, Node) {
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root_from(&Wide::new()).expect("a transport");
    (net, a, b)
}

/// The bytes of the messages `f` makes a node send (a node whose messages
/// are counted, then handed to a second node).
fn wire_bytes(f: impl Fn(&Node)) -> usize {
    let a = Node::new("a");
    let b = Node::new("b");
    b.set_sender(|_| {});
    let bytes = Arc::new(Mutex::new(0));
    let count = bytes.clone();
    let to = b.clone();
    a.set_sender(move |m| {
        *count.lock().unwrap() += m.as_bytes().len();
        to.receive(m.as_bytes()).expect("a valid message");
    });
    a.set_root_from(&Wide::new()).expect("a transport");
    *bytes.lock().unwrap() = 0;
    f(&a);
    *bytes.lock().unwrap()
}

fn typed(c: &mut Criterion) {
    let update = wire_bytes(|a| a.update(|w: &mut Wide| w.f500 += 1).unwrap());
    let resend = wire_bytes(|a| {
        let mut w = Wide::new();
        w.f500 = 1;
        a.set_root(Input::from_serialize(&w).unwrap()).unwrap();
    });
    println!("wire bytes: update one field {update} B, re-send the struct {resend} B");

    let mut g = c.benchmark_group("typed_1000_fields");
    {
        let (_net, a, b) = pair();
        g.bench_function("update_one_field", |bench| {
            bench.iter(|| a.update(|w: &mut Wide| w.f500 += 1).unwrap())
        });
        assert_eq!(
            b.root_as::<Wide>().unwrap().f500,
            a.root_as::<Wide>().unwrap().f500
        );
    }
    {
        let (_net, a, b) = pair();
        let mut w = Wide::new();
        g.bench_function("set_root_from_one_field", |bench| {
            bench.iter(|| {
                w.f500 += 1;
                a.set_root_from(&w).unwrap()
            })
        });
        assert_eq!(b.root_as::<Wide>().unwrap().f500, w.f500);
    }
    {
        let (_net, a, b) = pair();
        let mut w = Wide::new();
        g.bench_function("resend_struct", |bench| {
            bench.iter(|| {
                w.f500 += 1;
                a.set_root(Input::from_serialize(&w).unwrap()).unwrap()
            })
        });
        assert_eq!(b.root_as::<Wide>().unwrap().f500, w.f500);
    }
    {
        let (_net, a, _b) = pair();
        g.bench_function("root_as", |bench| {
            bench.iter(|| black_box(a.root_as::<Wide>().unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, typed);
criterion_main!(benches);
