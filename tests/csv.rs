//! CSV data sets (src/data/csv.rs): parsing, typed errors naming file, line and column,
//! classes, standardization, the split and the checkpoint record. No GPU.

use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::csv::{CsvOptions, Header, LabelColumn, Split, SplitPlan, Standardizer};
use halfgrad::data::{CsvMeta, CsvTable, Dataset};
use halfgrad::{CsvProblem, Error};

fn parse(text: &str) -> halfgrad::Result<CsvTable> {
    CsvTable::parse(text.as_bytes(), "t.csv", &CsvOptions::default())
}

fn parse_with(text: &str, options: CsvOptions) -> halfgrad::Result<CsvTable> {
    CsvTable::parse(text.as_bytes(), "t.csv", &options)
}

/// The error's (line, column, problem), after checking it names the file.
fn csv_err(
    r: halfgrad::Result<impl std::fmt::Debug>,
) -> (Option<usize>, Option<String>, CsvProblem) {
    match r {
        Err(e @ Error::Csv { .. }) => {
            assert!(e.to_string().starts_with("t.csv"), "{e}");
            let Error::Csv {
                row,
                column,
                problem,
                ..
            } = e
            else {
                unreachable!()
            };
            (row, column, problem)
        }
        other => panic!("expected a CSV error, got {other:?}"),
    }
}

const IRIS: &str = "sepal,petal,species\n\
                    5.1,1.4,setosa\n\
                    7.0,4.7,versicolor\n\
                    6.3,6.0,virginica\n\
                    4.9,1.4,setosa\n\
                    6.4,4.5,versicolor\n\
                    5.8,5.1,virginica\n";

#[test]
fn header_detected_labels_last_and_quotes() {
    let t = parse(IRIS).unwrap();
    assert!(t.header);
    assert_eq!(t.features, ["sepal", "petal"]);
    assert_eq!(t.label, Some(("species".to_string(), 2)));
    assert_eq!(t.rows(), 6);
    assert_eq!(t.row(1), [7.0, 4.7]);
    assert_eq!(t.lines[0], 2);

    // No header: a text label column alone does not make the first row a header.
    let t = parse("1,2,cat\n3,4,dog\n").unwrap();
    assert!(!t.header);
    assert_eq!(t.features, ["column 1", "column 2"]);
    assert_eq!(t.rows(), 2);

    // Quotes, CRLF, a BOM, blank lines, spaces around cells.
    let t = parse("\u{feff}\"a, b\",label\r\n 1.5 ,\"x \"\"y\"\"\"\r\n\r\n-2e-1,z\r\n").unwrap();
    assert_eq!(t.features, ["a, b"]);
    assert_eq!(t.values, [1.5, -0.2]);
    assert_eq!(t.labels, ["x \"y\"", "z"]);
    assert_eq!(t.lines, [2, 4]);

    // Header given, label named or numbered.
    let opts = |header, label: &str| CsvOptions {
        header,
        label: LabelColumn::Named(label.into()),
        ..CsvOptions::default()
    };
    let t = parse_with("1,2,3\n4,5,6\n", opts(Header::Present, "1")).unwrap();
    assert_eq!(
        (t.features.clone(), t.labels.clone()),
        (
            vec!["2".to_string(), "3".to_string()],
            vec!["4".to_string()]
        )
    );
    let t = parse_with("a,b,c\n1,2,3\n", opts(Header::Auto, "b")).unwrap();
    assert_eq!(t.features, ["a", "c"]);
    assert_eq!(t.labels, ["2"]);
    // A text column that is not the label is a non-numeric cell.
    let (row, column, problem) = csv_err(parse_with(IRIS, opts(Header::Auto, "sepal")));
    assert_eq!((row, column.as_deref()), (Some(2), Some("3 (\"species\")")));
    assert_eq!(
        problem,
        CsvProblem::NotNumeric {
            cell: "setosa".into()
        }
    );
}

#[test]
fn every_bad_input_is_a_typed_error_naming_file_line_and_column() {
    // Empty, blank-only, header only.
    assert_eq!(csv_err(parse("")).2, CsvProblem::Empty);
    assert_eq!(csv_err(parse("\n \r\n")).2, CsvProblem::Empty);
    assert_eq!(csv_err(parse("a,b,label\n")).2, CsvProblem::NoRows);
    // Ragged row.
    let (row, column, problem) = csv_err(parse("a,b,label\n1,2,x\n3,y\n"));
    assert_eq!((row, column), (Some(3), None));
    assert_eq!(
        problem,
        CsvProblem::Ragged {
            expected: 3,
            got: 2
        }
    );
    // Non-numeric, empty, NaN and infinite cells.
    let (row, column, problem) = csv_err(parse("a,b,label\n1,2,x\n3,four,y\n"));
    assert_eq!((row, column.as_deref()), (Some(3), Some("2 (\"b\")")));
    assert_eq!(
        problem,
        CsvProblem::NotNumeric {
            cell: "four".into()
        }
    );
    let (row, column, problem) = csv_err(parse("1,2,x\n3,,y\n"));
    assert_eq!(
        (row, column.as_deref(), problem),
        (Some(2), Some("2"), CsvProblem::EmptyCell)
    );
    for bad in ["NaN", "nan", "inf", "-inf", "1e39"] {
        let (row, column, problem) = csv_err(parse(&format!("a,b,label\n1,2,x\n{bad},3,y\n")));
        assert_eq!(
            (row, column.as_deref()),
            (Some(3), Some("1 (\"a\")")),
            "{bad}"
        );
        assert_eq!(problem, CsvProblem::NotFinite { cell: bad.into() });
    }
    let (row, _, problem) = csv_err(parse("a,b,label\n1,2,\"x\n"));
    assert_eq!((row, problem), (Some(2), CsvProblem::UnclosedQuote));
    // Missing label column.
    let named = CsvOptions {
        label: LabelColumn::Named("kind".into()),
        ..CsvOptions::default()
    };
    let (row, column, problem) = csv_err(parse_with(IRIS, named.clone()));
    assert_eq!((row, column), (None, None));
    assert_eq!(
        problem,
        CsvProblem::NoLabelColumn {
            label: "kind".into(),
            columns: "sepal, petal, species".into()
        }
    );
    assert!(csv_err(parse_with(
        "1,2\n3,4\n",
        CsvOptions {
            label: LabelColumn::Named("7".into()),
            ..CsvOptions::default()
        }
    ))
    .2
    .to_string()
    .contains("no label column \"7\""));
    assert_eq!(csv_err(parse("label\nx\n")).2, CsvProblem::NoFeatures);
    // Over the size limit: refused before parsing (the message says the limit).
    let small = CsvOptions {
        max_bytes: 10,
        ..CsvOptions::default()
    };
    let e = parse_with(IRIS, small.clone()).unwrap_err();
    assert!(e.to_string().contains("above the limit of 10 bytes"), "{e}");
    let dir = std::env::temp_dir().join(format!("halfgrad-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("big.csv");
    std::fs::write(&file, IRIS).unwrap();
    let e = CsvTable::read(&file, &small).unwrap_err();
    assert!(
        matches!(&e, Error::Csv { path, problem: CsvProblem::TooLarge { bytes, limit: 10 }, .. }
        if path.ends_with("big.csv") && *bytes == IRIS.len() as u64),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Not UTF-8.
    let e = CsvTable::parse(b"a,b\n\xff,1\n", "t.csv", &CsvOptions::default()).unwrap_err();
    assert!(matches!(
        e,
        Error::Csv {
            problem: CsvProblem::NotText,
            ..
        }
    ));

    // Classes: a single one, more than training rows.
    let one = parse("a,label\n1,x\n2,x\n3,x\n").unwrap();
    let e = CsvMeta::new(&one, SplitPlan::Fraction(0.34), true).unwrap_err();
    assert_eq!(
        csv_err(Err::<(), _>(e)).2,
        CsvProblem::SingleClass { class: "x".into() }
    );
    let many = parse("a,label\n1,x\n2,y\n3,z\n4,w\n5,v\n").unwrap();
    let e = CsvMeta::new(&many, SplitPlan::Fraction(0.2), true).unwrap_err();
    assert_eq!(
        csv_err(Err::<(), _>(e)).2,
        CsvProblem::TooManyClasses {
            classes: 5,
            rows: 4
        }
    );
    // A split that leaves a side empty.
    let e = CsvMeta::new(&parse(IRIS).unwrap(), SplitPlan::Fraction(0.01), true).unwrap_err();
    assert!(e.to_string().contains("6 training and 0 test rows"), "{e}");
    // A test file with a label the training file lacks is fine (the class exists, no row
    // trains it); one whose columns differ is not.
    let other = parse("x,y,species\n1,2,setosa\n").unwrap();
    let e = CsvMeta::new(&parse(IRIS).unwrap(), SplitPlan::TestFile(&other), true).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Csv {
                problem: CsvProblem::ColumnsMismatch { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn classes_split_and_standardization() {
    let t = parse(IRIS).unwrap();
    let meta = CsvMeta::new(&t, SplitPlan::Fraction(0.34), true).unwrap();
    assert_eq!(meta.classes, ["setosa", "versicolor", "virginica"]);
    assert_eq!(meta.label, "species");
    let Split::Random { train, test, .. } = meta.split else {
        panic!()
    };
    assert_eq!((train, test), (4, 2));
    let data = meta.build(&t, None).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (4, 2));
    assert_eq!((data.train.features(), data.train.classes()), (2, 3));
    // The training rows standardize to mean 0, std 1 (f64 reference).
    let x = data.train.inputs();
    for j in 0..2 {
        let col: Vec<f64> = x.chunks(2).map(|r| f64::from(r[j])).collect();
        let mean = col.iter().sum::<f64>() / 4.0;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
    }
    // Every row lands on one side, with its label.
    let mut seen: Vec<(Vec<u32>, u32)> = Vec::new();
    let s = meta.standardize.clone().unwrap();
    for d in [&data.train, &data.test] {
        for i in 0..d.len() {
            let (row, label) = d.get(i);
            let raw: Vec<u32> = row
                .iter()
                .zip(s.mean.iter().zip(&s.std))
                .map(|(v, (m, sd))| {
                    ((f64::from(*v) * f64::from(*sd) + f64::from(*m)) * 10.0).round() as u32
                })
                .collect();
            seen.push((raw, label));
        }
    }
    seen.sort();
    let mut expected: Vec<(Vec<u32>, u32)> = (0..6)
        .map(|i| {
            let r = t.row(i);
            let label = meta.classes.iter().position(|c| *c == t.labels[i]).unwrap() as u32;
            (r.iter().map(|v| (v * 10.0).round() as u32).collect(), label)
        })
        .collect();
    expected.sort();
    assert_eq!(seen, expected);

    // Integer labels sort numerically and stay integers; no standardization keeps values.
    let t = parse("f,y\n0.5,10\n1.5,2\n2.5,07\n3.5,2\n").unwrap();
    let meta = CsvMeta::new(&t, SplitPlan::Fraction(0.25), false).unwrap();
    assert_eq!(meta.classes, ["2", "7", "10"]);
    let data = meta.build(&t, None).unwrap();
    let mut all: Vec<(f32, u32)> = (0..data.train.len())
        .map(|i| (data.train.get(i).0[0], data.train.get(i).1))
        .chain((0..data.test.len()).map(|i| (data.test.get(i).0[0], data.test.get(i).1)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(all, [(0.5, 2), (1.5, 0), (2.5, 1), (3.5, 0)]);

    // Constant columns map to 0 rather than dividing by 0.
    let s = Standardizer::fit(&[3.0, 1.0, 3.0, 2.0], 2);
    assert_eq!(s.std[0], 1.0);
    let mut x = vec![3.0, 1.5];
    s.apply(&mut x);
    assert_eq!(x, [0.0, 0.0]);
}

#[test]
fn the_record_round_trips_through_a_checkpoint_and_refuses_other_files() {
    let t = parse(IRIS).unwrap();
    let test = parse("sepal,petal,species\n5.0,1.5,setosa\n6.0,5.0,virginica\n").unwrap();
    for plan in [SplitPlan::Fraction(0.5), SplitPlan::TestFile(&test)] {
        let meta = CsvMeta::new(&t, plan, true).unwrap();
        let mut ck = Checkpoint::new();
        ck.set_meta("step", 3);
        meta.write_meta(&mut ck).unwrap();
        let back = Checkpoint::from_bytes(&ck.to_bytes().unwrap(), "ck").unwrap();
        let read = CsvMeta::read_meta(&back).unwrap().unwrap();
        assert_eq!(read, meta);
        let a = meta.build(&t, Some(&test)).unwrap();
        let b = read.build(&t, Some(&test)).unwrap();
        assert_eq!(a, b);
    }
    assert_eq!(CsvMeta::read_meta(&Checkpoint::new()).unwrap(), None);

    // Other contents (one value changed) are refused, and so is a missing test file.
    let meta = CsvMeta::new(&t, SplitPlan::TestFile(&test), true).unwrap();
    let changed = parse(&IRIS.replace("6.4", "6.5")).unwrap();
    let e = meta.build(&changed, Some(&test)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Csv {
                problem: CsvProblem::Changed { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(meta.build(&t, None).is_err());
    // Labels outside the recorded classes name their line.
    let mut narrow = meta.clone();
    narrow.classes.retain(|c| c != "virginica");
    let (row, column, problem) = csv_err(narrow.build(&t, Some(&test)));
    assert_eq!((row, column.as_deref()), (Some(4), Some("3 (\"species\")")));
    assert!(matches!(problem, CsvProblem::UnknownClass { .. }));
    // Damaged metadata is a checkpoint error.
    let mut ck = Checkpoint::new();
    meta.write_meta(&mut ck).unwrap();
    ck.set_meta("data.classes", "[1,");
    assert!(matches!(
        CsvMeta::read_meta(&ck),
        Err(Error::Checkpoint { .. })
    ));
}
