-- The reference rows antenna-jobs relies on in a bare database: Antenna's content types and the
-- permissions of the main.project content type (the codenames that project roles are made of and
-- that permission checks read). Copied from tests/fixtures/antenna/reference-rows.sql (what
-- Antenna's migrations insert), plus delete_occurrences, update_project and import_data, which
-- Antenna only creates with the first project (ami/users/roles.py names them "Can <codename with
-- spaces>").
--
-- No explicit ids: the identity columns number them. Content types are looked up by
-- (app_label, model), never by id. Idempotent: a second run inserts nothing and, because rows that
-- exist are filtered out before the INSERT, draws no identity values either (ON CONFLICT alone
-- would). ON CONFLICT DO NOTHING still covers a concurrent run.

INSERT INTO django_content_type (app_label, model)
SELECT v.app_label, v.model FROM (VALUES
    ('auth',               'permission'),
    ('auth',               'group'),
    ('contenttypes',       'contenttype'),
    ('sessions',           'session'),
    ('sites',              'site'),
    ('admin',              'logentry'),
    ('django_celery_beat', 'crontabschedule'),
    ('django_celery_beat', 'intervalschedule'),
    ('django_celery_beat', 'periodictask'),
    ('django_celery_beat', 'periodictasks'),
    ('django_celery_beat', 'solarschedule'),
    ('django_celery_beat', 'clockedschedule'),
    ('authtoken',          'token'),
    ('authtoken',          'tokenproxy'),
    ('guardian',           'groupobjectpermission'),
    ('guardian',           'userobjectpermission'),
    ('users',              'user'),
    ('main',               'blogpost'),
    ('main',               'classificationresult'),
    ('main',               'deployment'),
    ('main',               'device'),
    ('main',               'event'),
    ('main',               'project'),
    ('main',               's3storagesource'),
    ('main',               'site'),
    ('main',               'sourceimage'),
    ('main',               'taxon'),
    ('main',               'taxalist'),
    ('main',               'sourceimagecollection'),
    ('main',               'page'),
    ('main',               'occurrence'),
    ('main',               'identification'),
    ('main',               'detection'),
    ('main',               'classification'),
    ('main',               'sourceimageupload'),
    ('main',               'tag'),
    ('main',               'userprojectmembership'),
    ('main',               'sourceimagethumbnail')
) AS v (app_label, model)
WHERE NOT EXISTS (
    SELECT FROM django_content_type ct WHERE ct.app_label = v.app_label AND ct.model = v.model
)
ON CONFLICT (app_label, model) DO NOTHING;

INSERT INTO auth_permission (name, content_type_id, codename)
SELECT p.name, ct.id, p.codename
FROM django_content_type ct, (VALUES
    ('Can add project',                                                 'add_project'),
    ('Can change project',                                              'change_project'),
    ('Can delete project',                                              'delete_project'),
    ('Can view project',                                                'view_project'),
    ('Can create identifications',                                      'create_identification'),
    ('Can update identifications',                                      'update_identification'),
    ('Can delete identifications',                                      'delete_identification'),
    ('Can create a job',                                                'create_job'),
    ('Can update a job',                                                'update_job'),
    ('Can run/retry/cancel ML jobs',                                    'run_ml_job'),
    ('Can run/retry/cancel Populate Collection jobs',                   'run_populate_captures_collection_job'),
    ('Can run/retry/cancel Data Storage Sync jobs',                     'run_data_storage_sync_job'),
    ('Can run/retry/cancel Regroup Events jobs',                        'run_regroup_events_job'),
    ('Can run/retry/cancel Data Export jobs',                           'run_data_export_job'),
    ('Can process a single capture',                                    'run_single_image_ml_job'),
    ('Can run/retry/cancel Post-Processing jobs',                       'run_post_processing_job'),
    ('Can delete a job',                                                'delete_job'),
    ('Can create a deployment',                                         'create_deployment'),
    ('Can delete a deployment',                                         'delete_deployment'),
    ('Can update a deployment',                                         'update_deployment'),
    ('Can sync images to a deployment',                                 'sync_deployment'),
    ('Can regroup deployment captures into sessions',                   'regroup_sessions_deployment'),
    ('Can create a collection',                                         'create_sourceimagecollection'),
    ('Can update a collection',                                         'update_sourceimagecollection'),
    ('Can delete a collection',                                         'delete_sourceimagecollection'),
    ('Can populate a collection',                                       'populate_sourceimagecollection'),
    ('Can create a source image',                                       'create_sourceimage'),
    ('Can update a source image',                                       'update_sourceimage'),
    ('Can delete a source image',                                       'delete_sourceimage'),
    ('Can star a source image',                                         'star_sourceimage'),
    ('Can create a source image upload',                                'create_sourceimageupload'),
    ('Can update a source image upload',                                'update_sourceimageupload'),
    ('Can delete a source image upload',                                'delete_sourceimageupload'),
    ('Can create storage',                                              'create_s3storagesource'),
    ('Can delete storage',                                              'delete_s3storagesource'),
    ('Can update storage',                                              'update_s3storagesource'),
    ('Can test storage connection',                                     'test_s3storagesource'),
    ('Can create a site',                                               'create_site'),
    ('Can delete a site',                                               'delete_site'),
    ('Can update a site',                                               'update_site'),
    ('Can create a device',                                             'create_device'),
    ('Can delete a device',                                             'delete_device'),
    ('Can update a device',                                             'update_device'),
    ('Can view project members',                                        'view_userprojectmembership'),
    ('Can add a user to the project',                                   'create_userprojectmembership'),
    ('Can update a user''s project membership and role in the project', 'update_userprojectmembership'),
    ('Can remove a user from the project',                              'delete_userprojectmembership'),
    ('Can create a data export',                                        'create_dataexport'),
    ('Can update a data export',                                        'update_dataexport'),
    ('Can delete a data export',                                        'delete_dataexport'),
    ('Can register pipelines for the project',                          'create_projectpipelineconfig'),
    ('Can update pipeline configurations',                              'update_projectpipelineconfig'),
    ('Can remove pipelines from the project',                           'delete_projectpipelineconfig'),
    ('Can create a taxa list',                                          'create_taxalist'),
    ('Can update a taxa list',                                          'update_taxalist'),
    ('Can delete a taxa list',                                          'delete_taxalist'),
    ('Can view private data',                                           'view_private_data'),
    -- created with the first project (ami/users/roles.py)
    ('Can delete occurrences',                                          'delete_occurrences'),
    ('Can update project',                                              'update_project'),
    ('Can import data',                                                 'import_data')
) AS p (name, codename)
WHERE ct.app_label = 'main' AND ct.model = 'project' AND NOT EXISTS (
    SELECT FROM auth_permission ap WHERE ap.content_type_id = ct.id AND ap.codename = p.codename
)
ON CONFLICT (content_type_id, codename) DO NOTHING;
