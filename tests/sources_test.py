"""data/sources.py: source names, extra-source entries and their errors, joining sources' images, strata, the
classes a source lacks (multi-source training end to end: multisource_test)."""

import ml_collections
import numpy as np
import pytest

from configs import tiny
from lungjax.data import images, sources


def _config(**data) -> ml_collections.ConfigDict:
  config = tiny.get_config()
  config.data.update(data)
  return config


def _decoded(n: int, label: int, fill: int) -> images.DecodedImages:
  return images.DecodedImages(np.full((n, 2, 2, 3), fill, np.uint8), np.full(n, label, np.int32),
                              tuple(f'{fill}/{i}.png' for i in range(n)), tuple(f'h{fill}{i}' for i in range(n)),
                              np.zeros((n, 4), np.float32), ((f'{fill}/bad.png', 'truncated'),))


def test_strata_put_the_source_before_the_class():
  labels_N, sources_N = np.asarray([0, 1, 2, 0, 1]), np.asarray([0, 0, 0, 1, 1])
  assert sources.strata(labels_N, sources_N, 2).tolist() == [0, 1, 2, 3, 4]
  assert sources.strata(labels_N, None, 1).tolist() == labels_N.tolist()


def test_the_main_source_is_named_by_its_field_else_its_root_else_the_kaggle_set():
  assert sources.main_source_name(_config(source_name='kids', root='/data/x')) == 'kids'
  assert sources.main_source_name(_config(source_name='', root='/data/x/')) == 'x'
  assert sources.main_source_name(_config(source_name='', root='', kaggle_dataset='owner/covid-set/')) == 'covid-set'


def test_extra_source_entries_parse_their_options_and_mapping(tmp_path):
  (tmp_path / 'adult').mkdir()
  entry = f'adult={tmp_path / "adult"};COVID=Covid;metadata=/t.csv;group_by=patient'
  (found,) = sources.extra_sources(_config(source_name='main', extra_sources=(entry,)))
  assert (found.name, found.folder, found.mapping) == ('adult', str(tmp_path / 'adult'), {'COVID': 'Covid'})
  assert (found.metadata, found.group_by, found.field) == ('/t.csv', 'patient', 'config.data.extra_sources[0]')
  config = _config(group_by='site', metadata_file_column='name')
  assert sources.grouping_column(found, config) == 'patient' and sources.file_column(found, config) == 'name'
  main = sources.main_source(config, '/data/train')
  assert sources.grouping_column(main, config) == ''  # No table: nothing to group by.
  assert sources.file_column(sources.Source('s', '/f'), _config(metadata_file_column='')) == 'file'


@pytest.mark.parametrize('entry, message', [
    ('adult', 'must read NAME=DIR'),
    ('adult={dir};A=Covid;B=Normal', 'more than one FOLDER=Class mapping'),
    ('adult={dir};metadata=/a.csv;metadata=/b.csv', 'metadata= is given twice'),
    ('adult={dir};group_by=patient', 'need a metadata=CSV table'),
    ('main={dir}', "source name 'main' is empty or already used"),
    ('adult={dir}/missing', 'does not exist'),
])
def test_a_bad_extra_source_entry_names_its_field(tmp_path, entry, message):
  with pytest.raises((ValueError, FileNotFoundError), match=rf'config.data.extra_sources\[0\].*{message}'):
    sources.extra_sources(_config(source_name='main', extra_sources=(entry.format(dir=tmp_path),)))


def test_extra_sources_given_as_one_string_is_refused():
  config = tiny.get_config()
  config.data = ml_collections.ConfigDict({**config.data.to_dict(), 'extra_sources': 'adult=/x'})
  with pytest.raises(ValueError, match=r"config.data.extra_sources='adult=/x' must be a tuple"):
    sources.extra_sources(config)


def test_concatenate_labels_every_image_with_its_source_and_lists_missing_classes():
  joined = sources.concatenate([_decoded(2, 0, 10), _decoded(3, 1, 20)], ('main', 'adult'))
  assert joined.sources_N.tolist() == [0, 0, 1, 1, 1] and joined.source_names == ('main', 'adult')
  assert joined.labels_N.tolist() == [0, 0, 1, 1, 1] and joined.images_NHWC[:, 0, 0, 0].tolist() == [10] * 2 + [20] * 3
  assert joined.paths[2] == '20/0.png' and len(joined.skipped) == 2
  assert sources.missing_classes(joined, ('Covid', 'Normal')) == {'main': ['Normal'], 'adult': ['Covid']}
  sources_N, names = sources.source_indices(_decoded(2, 0, 1))
  assert sources_N.tolist() == [0, 0] and names == ('',)
  one = sources.concatenate([_decoded(2, 0, 1)], ('only',))
  assert one.sources_N.tolist() == [0, 0] and one.source_names == ('only',)


def test_joined_images_read_rows_from_each_part_in_order_and_subset():
  parts = [np.full((2, 2, 2, 3), 1, np.uint8), np.full((3, 2, 2, 3), 2, np.uint8)]
  joined = sources.JoinedImages.of(parts)
  assert len(joined) == 5 and joined.shape == (5, 2, 2, 3)
  assert joined[np.array([4, 0, 2])][:, 0, 0, 0].tolist() == [2, 1, 2] and int(joined[1][0, 0, 0]) == 1
  assert np.asarray(joined.subset([3, 1]))[:, 0, 0, 0].tolist() == [2, 1]
  with pytest.raises(ValueError, match='different image shapes'):
    sources.JoinedImages.of([parts[0], np.zeros((1, 3, 3, 3), np.uint8)])
